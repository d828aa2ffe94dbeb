"""Hardening of the HTTP surface against a real uvicorn server on 127.0.0.1.

Classes 6 (keys and metrics), 7 (slow clients) and 8 (the OpenAPI document and the docs
pages) of the hardening issue: each test fails on the code before the fix.
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from test_service_support import ThreadServer, free_port, start_serve_process
from typer.testing import CliRunner

from adloop.optimizer import Engine
from adloop.optimizer.auth import KeyRing, create_key, key_id
from adloop.optimizer.service import create_app
from adloop.storage import Store

VARIANTS = [{"text": "Rings made for you"}, {"text": "Bespoke rings in gold"}]
BRIEF = {"product": "bespoke rings", "language": "en"}


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The engine's store, counting the key lookups that reach it (the edge, not internals)."""

    def __init__(self, store) -> None:
        self._store = store
        self.key_lookups = 0

    def api_key(self, key_hash: str):
        self.key_lookups += 1
        return self._store.api_key(key_hash)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


@pytest.fixture
def deployment(tmp_path: Path):
    """A server with two tenants' keys and an admin key; its key ring runs on a fake clock."""
    engine = Engine(tmp_path / "adloop.duckdb")
    keys = {
        "acme": create_key(engine.store, tenant="acme"),
        "globex": create_key(engine.store, tenant="globex"),
        "admin": create_key(engine.store, tenant="ops", admin=True),
    }
    clock = FakeClock()
    store = CountingStore(engine.store)
    app = create_app(
        engine, keyring=KeyRing(store, clock=clock), body_timeout=0.5, close_engine=True
    )
    with ThreadServer(app) as server:
        yield server.url, keys, clock, store


def _client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _campaign(url: str, key: str) -> str:
    with _client(url, key) as http:
        made = http.post("/v1/campaigns", json={"brief": BRIEF, "variants": VARIANTS})
        assert made.status_code == 201, made.text
        return made.json()["campaign_id"]


# -- 6. keys and metrics ---------------------------------------------------------------------


def test_metrics_show_campaign_ids_only_to_their_tenant_or_an_admin(deployment) -> None:
    url, keys, _, _ = deployment
    acme_campaign, globex_campaign = _campaign(url, keys["acme"]), _campaign(url, keys["globex"])
    with _client(url, None) as anonymous:
        text = anonymous.get("/metrics").text
    assert acme_campaign not in text and globex_campaign not in text
    assert "adloop_snapshot_age_max_seconds" in text and "adloop_decisions_total" in text
    with _client(url, keys["acme"]) as acme:
        text = acme.get("/metrics").text
    assert acme_campaign in text and globex_campaign not in text
    with _client(url, keys["admin"]) as admin:
        text = admin.get("/metrics").text
    assert acme_campaign in text and globex_campaign in text
    with _client(url, "adk_wrong") as wrong:
        assert wrong.get("/metrics").status_code == 401


def test_wrong_keys_are_remembered_and_failing_clients_are_rate_limited(deployment) -> None:
    url, keys, _, store = deployment
    for in_use in (keys["acme"], keys["admin"]):  # keys in use are never rate-limited
        with _client(url, in_use) as http:
            assert http.get("/v1/campaigns").status_code == 200
    with _client(url, "adk_wrong-key") as wrong:
        statuses = [wrong.get("/v1/campaigns").status_code for _ in range(40)]
    # the store was asked once about the wrong key (the fake clock never moved)
    assert store.key_lookups <= 3
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429
    with _client(url, "adk_another-wrong-key") as wrong:
        limited = wrong.get("/v1/campaigns")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "too_many_failures"
    assert limited.json()["field"] == "authorization"
    # a key in use from the same client is not limited
    with _client(url, keys["acme"]) as acme:
        assert acme.get("/v1/campaigns").status_code == 200
    with _client(url, keys["admin"]) as admin:
        text = admin.get("/metrics").text
    assert re.search(r'adloop_auth_failures_total\{reason="rate_limited"\} [1-9]', text)


def test_keys_are_listed_revoked_and_expire_on_a_running_server(deployment) -> None:
    url, keys, clock, store = deployment
    with _client(url, keys["admin"]) as admin:
        made = admin.post("/v1/keys", json={"tenant": "hooli"}).json()
        listed = admin.get("/v1/keys", params={"tenant": "hooli"}).json()["keys"]
        assert [row["key_id"] for row in listed] == [made["key_id"]]
        assert made["api_key"] not in json.dumps(listed)
        with _client(url, made["api_key"]) as hooli:
            assert hooli.get("/v1/campaigns").status_code == 200
            revoked = admin.delete(f"/v1/keys/{made['key_id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"]
            assert hooli.get("/v1/campaigns").status_code == 401  # at once
        assert admin.delete("/v1/keys/0123456789abcdef").status_code == 404
    with _client(url, keys["acme"]) as acme:
        assert acme.get("/v1/keys").status_code == 403
        assert acme.delete(f"/v1/keys/{key_id(keys['globex'])}").status_code == 403
        # revoked behind the service's back (another handle on the same file): seen once
        # the service's answer for the key is a second old
        assert acme.get("/v1/campaigns").status_code == 200
        with Store(store.path) as other:
            other.revoke_api_key(key_id(keys["acme"]))
        clock.now += 1.01
        assert acme.get("/v1/campaigns").status_code == 401


def test_a_key_with_an_expiry_stops_working(deployment) -> None:
    url, _, clock, store = deployment
    key = create_key(store, tenant="acme", expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
    with _client(url, key) as http:
        assert http.get("/v1/campaigns").status_code == 200
        time.sleep(0.4)
        clock.now += 1.01
        assert http.get("/v1/campaigns").status_code == 401


def test_keys_cli_lists_and_revokes_through_the_file_or_the_service(
    deployment, tmp_path: Path
) -> None:
    from adloop.cli import app

    url, keys, _, _ = deployment
    runner = CliRunner()
    listed = runner.invoke(
        app, ["keys", "list", "--url", url, "--api-key", keys["admin"], "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert {row["tenant"] for row in json.loads(listed.stdout)} == {"acme", "globex", "ops"}
    gone = runner.invoke(
        app, ["keys", "revoke", key_id(keys["globex"]), "--url", url, "--api-key", keys["admin"]]
    )
    assert gone.exit_code == 0, gone.output
    with _client(url, keys["globex"]) as globex:
        assert globex.get("/v1/campaigns").status_code == 401
    # with the service stopped, on the file; --expires is stored with the key
    db = tmp_path / "offline.duckdb"
    made = runner.invoke(
        app, ["keys", "create", "--tenant", "acme", "--db", str(db), "--expires", "30d", "--json"]
    )
    assert made.exit_code == 0, made.output
    made_key = json.loads(made.stdout)
    assert made_key["expires_at"]
    revoked = runner.invoke(app, ["keys", "revoke", made_key["key_id"], "--db", str(db)])
    assert revoked.exit_code == 0, revoked.output
    rows = json.loads(runner.invoke(app, ["keys", "list", "--db", str(db), "--json"]).stdout)
    assert rows[0]["revoked_at"] and rows[0]["expires_at"]
    assert runner.invoke(app, ["keys", "revoke", "nothex", "--db", str(db)]).exit_code == 1


# -- 7. slow clients ---------------------------------------------------------------------------


def _stalled_upload(url: str, path: str, key: str) -> tuple[bytes, float]:
    """Announce a 1,000-byte body, send 10 bytes, stop: what comes back, and how soon."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"events":'
        )
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # b"" once the server closes the connection
            answer += chunk
        return answer, time.monotonic() - started


def test_a_client_that_stops_sending_its_body_gets_408_and_is_closed(deployment) -> None:
    url, keys, _, _ = deployment
    campaign_id = _campaign(url, keys["acme"])
    for path in ("/v1/events", f"/v1/campaigns/{campaign_id}/choose", "/v1/campaigns"):
        answer, _ = _stalled_upload(url, path, keys["acme"])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"] == "body_timeout"
    with _client(url, keys["acme"]) as http:  # the server is fine
        assert http.get("/v1/campaigns").status_code == 200


def test_connections_beyond_the_limit_get_503_at_once(tmp_path: Path) -> None:
    port = free_port()
    process = start_serve_process(tmp_path / "adloop.duckdb", port, "--max-connections", "4")
    idle: list[socket.socket] = []
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        time.sleep(0.2)  # let the server accept them
        refused = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert refused.status_code == 503
        for sock in idle:
            sock.close()
        idle = []
        time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        process.terminate()
        process.communicate(timeout=60)  # reads and closes its output pipe


# -- 8. the OpenAPI document and the docs pages -------------------------------------------------


def _refs(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_openapi_refs_resolve_and_errors_are_documented_with_the_real_body(deployment) -> None:
    url, keys, _, _ = deployment
    with _client(url, None) as http:
        schema = http.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for ref in _refs(schema):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components
    assert "$defs" not in json.dumps(schema) and "HTTPValidationError" not in components
    assert set(components["ErrorBody"]["required"]) == {"error", "message", "field"}
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    events = schema["paths"]["/v1/events"]["post"]["responses"]
    for status in ("400", "401", "408", "413", "422", "429"):
        assert events[status]["content"]["application/json"]["schema"] == error_ref
    choose = schema["paths"]["/v1/campaigns/{campaign_id}/choose"]["post"]["responses"]
    assert {"404", "409"} <= set(choose)
    assert {"403", "409"} <= set(schema["paths"]["/v1/keys/{key_id}"]["delete"]["responses"])
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    # what the schema forbids, the service refuses; what it allows, the service takes
    assert components["ChooseBody"]["not"]["required"] == ["n", "request_id"]
    assert {"required": ["n"]}.items() <= components["AddVariantsBody"]["oneOf"][1].items()
    campaign_id = _campaign(url, keys["acme"])
    with _client(url, keys["acme"]) as http:
        assert http.post(f"/v1/campaigns/{campaign_id}/variants", json={}).status_code == 422
        both = http.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": 2, "request_id": "r"})
        assert both.status_code == 422
        unknown = http.get("/v1/nothing-here")
        assert unknown.status_code == 404 and set(unknown.json()) >= {"error", "message", "field"}


def test_docs_pages_load_their_assets_from_the_service(deployment) -> None:
    url, _, _, _ = deployment
    with _client(url, None) as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page).text
            assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
            assert assets, html
            for asset in assets:
                assert asset.startswith("/docs/assets/"), asset  # no CDN
                assert http.get(asset).status_code == 200
