"""The OpenAPI document matches the service: schemathesis against a real uvicorn server.

Every schemathesis check runs (``--checks all``): no 5xx, every status, content type, header
and body as documented, schema-valid requests accepted, schema-invalid ones refused, key
required where the schema says so. Examples and time are bounded (well under two minutes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_service_support import ThreadServer

from adloop.optimizer import Engine
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app

pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")

# Creating a campaign or adding variants may be refused (422) for what the brief *says*: its
# banned terms, required terms, a language or a product the generators cannot write for.
# The schema describes the brief's shape, not those rules, so for these two operations a
# schema-valid request may get 422; every other operation must accept what the schema allows.
CONFIG = """
[[operations]]
include-path-regex = "^/v1/campaigns(/\\\\{campaign_id\\\\}/variants)?$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "401", "403", "404", "409", "422", "429"
]
"""


@pytest.fixture
def server(tmp_path: Path):
    from adloop.generators import GeneratorPool

    engine = Engine(tmp_path / "adloop.duckdb", pool=GeneratorPool(["template"]))
    admin_key = create_key(engine.store, tenant="ops", admin=True)
    with ThreadServer(create_app(engine, close_engine=True)) as running:
        yield running.url, admin_key


def test_the_service_conforms_to_its_openapi_document(server, tmp_path: Path) -> None:
    url, admin_key = server
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    command = [
        executable or "schemathesis",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {admin_key}",
        "--max-examples",
        "15",
        "--generation-deterministic",
        "--request-timeout",
        "10",
        "--no-color",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
