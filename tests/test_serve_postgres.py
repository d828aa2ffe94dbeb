"""Two real ``adloop serve`` processes sharing one PostgreSQL store (``--db postgresql://``).

One PostgreSQL server (Debian's ``postgresql-15``, initdb into a temp folder, stopped by PID);
the key is made with the ``adloop keys create`` CLI; each serve process is uvicorn on its own
port on 127.0.0.1, stopped by PID. Checked: a campaign created through one process is shown
and served by the other, and events posted to both (some to both) are counted exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

pytest.importorskip("psycopg", reason="the PostgreSQL store needs: pip install 'adloop[scale]'")

from test_service_support import free_port, reap, start_serve_process, terminate  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

VARIANTS = [{"text": "Bespoke engagement rings, made to measure"},
            {"text": "Engagement rings designed with you"}]  # fmt: skip


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh PostgreSQL server, stopped after the test."""
    from adloop.scale.local import LocalPostgres, ServiceError

    try:
        server = LocalPostgres(tmp_path / "pg").start()
    except ServiceError as error:
        pytest.skip(str(error))
    try:
        yield server.url
    finally:
        server.stop()


def _create_key(db: str) -> str:
    """An API key for tenant acme, made by the CLI in the store ``db``."""
    made = subprocess.run(
        [sys.executable, "-m", "adloop.cli", "keys", "create", "--tenant", "acme", "--db", db,
         "--json"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    return json.loads(made.stdout)["api_key"]


def _events(campaign_id: str, variant_ids: list[str], numbers: range) -> list[dict]:
    """Impressions numbered ``numbers`` (alternating variants), a click on every third."""
    ts = (datetime.now(UTC) - timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    rows = []
    for i in numbers:
        variant_id = variant_ids[i % 2]
        rows.append({"event_id": f"imp{i}", "type": "impression", "campaign_id": campaign_id,
                     "variant_id": variant_id, "ts": ts})  # fmt: skip
        if i % 3 == 0:
            rows.append({"event_id": f"click{i}", "type": "click", "campaign_id": campaign_id,
                         "variant_id": variant_id, "ts": ts})  # fmt: skip
    return rows


def _counts(view: dict) -> dict[str, tuple[int, int]]:
    return {v["variant_id"]: (v["impressions"], v["clicks"]) for v in view["variants"]}


def test_two_serve_processes_share_campaigns_keys_and_events(pg_url: str) -> None:
    headers = {"Authorization": f"Bearer {_create_key(pg_url)}"}
    ports = [free_port(), free_port()]
    a, b = (httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)
            for port in ports)  # fmt: skip
    processes = []
    try:
        for port in ports:
            processes.append(start_serve_process(pg_url, port))
        # Impressions come from the posted events only, so the expected counts are exact.
        created = a.post("/v1/campaigns", json={
            "brief": {"product": "bespoke engagement rings", "language": "en"},
            "variants": VARIANTS, "impressions_reported_separately": True,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        campaign_id = created.json()["campaign_id"]
        variant_ids = [v["variant_id"] for v in created.json()["variants"]]

        shown = b.get(f"/v1/campaigns/{campaign_id}")
        assert shown.status_code == 200, shown.text
        assert [v["variant_id"] for v in shown.json()["variants"]] == variant_ids
        one = b.post(f"/v1/campaigns/{campaign_id}/choose", json={})
        assert one.status_code == 200, one.text
        assert one.json()["variant_id"] in variant_ids
        many = b.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": 20})
        assert many.status_code == 200, many.text
        assert {c["variant_id"] for c in many.json()["decisions"]} <= set(variant_ids)

        # imp0..imp39 to A, imp30..imp59 to B: the ten in the middle reach both processes.
        to_a, to_b = (
            _events(campaign_id, variant_ids, range(40)),
            _events(campaign_id, variant_ids, range(30, 60)),
        )
        answer_a = a.post("/v1/events", json={"events": to_a}).json()
        answer_b = b.post("/v1/events", json={"events": to_b}).json()
        both = {e["event_id"] for e in to_a} & {e["event_id"] for e in to_b}
        assert (answer_a["accepted"], answer_a["duplicates"]) == (len(to_a), 0), answer_a
        assert (answer_b["accepted"], answer_b["duplicates"]) == (
            len(to_b) - len(both), len(both)
        ), answer_b  # fmt: skip
        assert answer_a["rejected"] == answer_b["rejected"] == 0

        unique = {e["event_id"]: e for e in [*to_a, *to_b]}.values()
        per_type = Counter((e["variant_id"], e["type"]) for e in unique)
        expected = {v: (per_type[v, "impression"], per_type[v, "click"]) for v in variant_ids}
        assert sum(i for i, _ in expected.values()) == 60
        for client in (a, b):
            view = client.get(f"/v1/campaigns/{campaign_id}").json()
            assert _counts(view) == expected
        assert [terminate(process) for process in processes] == [0, 0]
        output = "".join(process.stdout.read().decode() for process in processes)
        assert "the store is shared" in output
    finally:
        a.close()
        b.close()
        for process in processes:
            reap(process)
