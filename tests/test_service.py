"""The HTTP service against a real uvicorn server on 127.0.0.1: round trip, auth, bad input, SRM."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from test_service_support import VARIANT_VIEW_FIELDS, ThreadServer

from adloop.optimizer import Engine
from adloop.optimizer.auth import KeyRing, Principal, create_key
from adloop.optimizer.service import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH, create_app

BRIEF = {
    "product": "bespoke engagement rings",
    "brand": "Aurelle",
    "language": "en",
    "offer": "free design consultation",
    "call_to_action": "Book now",
}
TEXTS = ["Rings made for you", "Bespoke rings in gold", "Your ring, your story"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from adloop.generators import GeneratorPool

    db = tmp_path_factory.mktemp("service") / "adloop.duckdb"
    engine = Engine(db, pool=GeneratorPool(["template", "recombine"]))
    keys = {
        "acme": create_key(engine.store, tenant="acme"),
        "globex": create_key(engine.store, tenant="globex"),
        "root": create_key(engine.store, tenant="ops", admin=True),
    }
    # one key comes from a keys file instead of the database
    keyring = KeyRing(engine.store, [("file-key-for-initech", Principal("initech"))])
    keys["initech"] = "file-key-for-initech"
    app = create_app(engine, keyring=keyring, close_engine=True)
    with ThreadServer(app) as server:
        yield server.url, keys
    # the lifespan closed the engine


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _create(http: httpx.Client, **extra) -> dict:
    body = {"brief": BRIEF, "variants": [{"text": t} for t in TEXTS], **extra}
    response = http.post("/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_full_round_trip(service) -> None:
    url, keys = service
    with client(url, keys["acme"]) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        created = http.post(
            "/v1/campaigns", json={"brief": BRIEF, "n_candidates": 4, "auto_approve": True}
        )
        assert created.status_code == 201, created.text
        campaign = created.json()
        campaign_id = campaign["campaign_id"]
        assert campaign["status"] == "active" and campaign["winner"] is None
        assert 1 <= len(campaign["variants"]) <= 4
        assert set(campaign["variants"][0]) >= VARIANT_VIEW_FIELDS
        assert "srm" in campaign["data_quality"]

        listed = http.get("/v1/campaigns").json()["campaigns"]
        assert campaign_id in {c["campaign_id"] for c in listed}

        choice = http.post(f"/v1/campaigns/{campaign_id}/choose", json={"segment": "mobile"})
        assert choice.status_code == 200, choice.text
        decision = choice.json()
        assert set(decision) == {"decision_id", "variant_id", "text", "probability"}
        empty_body = http.post(f"/v1/campaigns/{campaign_id}/choose")
        assert empty_body.status_code == 200
        many = http.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": 25}).json()
        assert len(many["decisions"]) == 25
        assert len({d["decision_id"] for d in many["decisions"]}) == 25

        events = [
            {
                "event_id": "rt-click-1",
                "type": "click",
                "campaign_id": campaign_id,
                "variant_id": decision["variant_id"],
                "decision_id": decision["decision_id"],
                "segment": "mobile",
                "ts": _now(),
            },
            {
                "event_id": "rt-conv-1",
                "type": "conversion",
                "campaign_id": campaign_id,
                "variant_id": decision["variant_id"],
                "value": 1250.0,
            },
        ]
        posted = http.post("/v1/events", json={"events": events})
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []}
        replay = http.post("/v1/events", json={"events": events}).json()
        assert replay["accepted"] == 0 and replay["duplicates"] == 2

        view = http.get(f"/v1/campaigns/{campaign_id}").json()
        by_id = {v["variant_id"]: v for v in view["variants"]}
        assert by_id[decision["variant_id"]]["clicks"] == 1
        assert by_id[decision["variant_id"]]["conversions"] == 1
        assert by_id[decision["variant_id"]]["value"] == pytest.approx(1250.0)
        assert sum(v["impressions"] for v in view["variants"]) == 27  # one per decision

        added = http.post(
            f"/v1/campaigns/{campaign_id}/variants",
            json={"variants": [{"headline": "Rings by hand", "description": "Gold."}]},
        )
        assert added.status_code == 201, added.text
        new_id = added.json()["added"][0]["variant_id"]
        generated = http.post(f"/v1/campaigns/{campaign_id}/variants", json={"n": 2})
        assert generated.status_code == 201, generated.text
        retired = http.post(f"/v1/campaigns/{campaign_id}/retire/{new_id}")
        assert retired.status_code == 200 and retired.json()["status"] == "retired"
        statuses = {
            v["variant_id"]: v["status"]
            for v in http.get(f"/v1/campaigns/{campaign_id}").json()["variants"]
        }
        assert statuses[new_id] == "retired"
        served = {
            http.post(f"/v1/campaigns/{campaign_id}/choose").json()["variant_id"] for _ in range(40)
        }
        assert new_id not in served

        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        for series in (
            "adloop_decisions_total",
            'adloop_events_total{outcome="accepted"} 2',
            'adloop_events_total{outcome="duplicate"} 2',
            "adloop_snapshot_age_seconds",
            "adloop_ingest_queue_events",
            'adloop_http_request_duration_seconds_bucket{route="/v1/campaigns/{campaign_id}/choose"',
        ):
            assert series in text
        docs = http.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        schema = http.get("/openapi.json").json()
        assert (
            "/v1/events" in schema["paths"]
            and "/v1/campaigns/{campaign_id}/choose" in schema["paths"]
        )


def test_missing_or_wrong_key_gets_401(service) -> None:
    url, keys = service
    with client(url, None) as http:
        assert http.get("/v1/campaigns").status_code == 401
        response = http.post("/v1/events", json={"events": []})
        assert response.status_code == 401 and response.json()["field"] == "authorization"
    with client(url, "adk_not-a-real-key") as http:
        assert http.get("/v1/campaigns").status_code == 401
    with httpx.Client(base_url=url, headers={"X-API-Key": keys["acme"]}) as http:
        assert http.get("/v1/campaigns").status_code == 200


def test_choose_answers_the_same_however_the_request_comes(service) -> None:
    # The common single choice is answered without the framework's routing; every other
    # shape of request goes through the route. Both must give the same answers.
    url, keys = service
    with client(url, keys["acme"]) as http:
        campaign_id = _create(http)["campaign_id"]
        path = f"/v1/campaigns/{campaign_id}/choose"
        first = http.post(path, json={"request_id": "r-1", "segment": "mobile"}).json()
        again = http.post(path, json={"request_id": "r-1", "segment": "mobile"}).json()
        assert again == first and set(first) == {"decision_id", "variant_id", "text", "probability"}
        with httpx.Client(base_url=url, headers={"X-API-Key": keys["acme"]}) as by_header:
            assert (
                by_header.post(path, json={"request_id": "r-1", "segment": "mobile"}).json()
                == first
            )
        # no Content-Length (a chunked body): the route reads it
        chunked = http.post(
            path, content=iter([b'{"request_id": ', b'"r-1", "segment": "mobile"}'])
        )
        assert chunked.status_code == 200 and chunked.json() == first
        assert http.post(path, json={"n": 2, "request_id": "r-1"}).json()["field"] == "request_id"
        assert http.post(path, content=b'{"segment": 7}').json()["field"] == "segment"
        metrics = http.get("/metrics").text
        assert (
            'adloop_http_requests_total{route="/v1/campaigns/{campaign_id}/choose",status="200"} 4'
            in metrics
        )
    with client(url, keys["globex"]) as other:
        assert other.post(f"/v1/campaigns/{campaign_id}/choose", json={}).status_code == 404


def _fast_path_counts(http: httpx.Client) -> dict[str, float]:
    """``adloop_http_choose_fast_path_total`` by outcome, from ``GET /metrics``."""
    counts = {"answered": 0.0, "refused": 0.0, "handed_on": 0.0}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("adloop_http_choose_fast_path_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('"')[1]] = float(value)
    return counts


def test_only_a_plainly_valid_single_choice_takes_the_fast_path(service) -> None:
    # The fast path answers ahead of the router; everything else must reach the route.
    url, keys = service
    with client(url, keys["acme"]) as http:
        campaign_id = _create(http)["campaign_id"]
        path = f"/v1/campaigns/{campaign_id}/choose"

        def way(send: Callable[[], httpx.Response], status: int = 200) -> str:
            """Which way one request went ("answered" or "handed_on"), checking its status."""
            before = _fast_path_counts(http)
            response = send()
            assert response.status_code == status, response.text
            after = _fast_path_counts(http)
            moved = {outcome: after[outcome] - before[outcome] for outcome in after}
            assert sorted(moved.values()) == [0, 0, 1], moved
            return max(moved, key=moved.__getitem__)

        plain = [
            lambda: http.post(path, json={"segment": "mobile", "request_id": "f-1"}),
            lambda: http.post(path, json={"segment": "mobile"}),
            lambda: http.post(path),  # an empty body means {}
            lambda: httpx.post(f"{url}{path}", json={}, headers={"X-API-Key": keys["acme"]}),
        ]
        for send in plain:
            assert way(send) == "answered"
        not_plain = [
            (lambda: http.post(path, json={"n": 2}), 200),
            (lambda: http.post(path, content=iter([b'{"segment": ', b'"mobile"}'])), 200),
            (lambda: http.post(path, json={"segment": 7}), 422),
            (lambda: http.post(path, json={"segment": "m", "extra": 1}), 422),
            (lambda: http.post(path, content=b"{nope"), 400),
            (lambda: http.post("/v1/campaigns/c_000000000000/choose", json={}), 404),
            (lambda: httpx.post(f"{url}{path}", json={}), 401),
        ]
        for send, status in not_plain:
            assert way(send, status) == "handed_on"
        # a wrong key is refused ahead of the router, with the route's own answer
        wrong = {"X-API-Key": "adk_nope"}
        refused = httpx.post(f"{url}{path}", json={}, headers=wrong)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == httpx.get(f"{url}/v1/campaigns", headers=wrong).json()
        assert way(lambda: httpx.post(f"{url}{path}", json={}, headers=wrong), 401) == "refused"
        # other requests never reach it
        before = _fast_path_counts(http)
        assert http.get(f"/v1/campaigns/{campaign_id}").status_code == 200
        assert http.post("/v1/events", json={"events": []}).status_code == 200
        assert _fast_path_counts(http) == before


def test_tenants_see_only_their_own_campaigns(service) -> None:
    url, keys = service
    with client(url, keys["acme"]) as acme, client(url, keys["globex"]) as globex:
        mine = _create(acme)
        campaign_id = mine["campaign_id"]
        variant_id = mine["variants"][0]["variant_id"]
        assert campaign_id not in {
            c["campaign_id"] for c in globex.get("/v1/campaigns").json()["campaigns"]
        }
        for response in (
            globex.get(f"/v1/campaigns/{campaign_id}"),
            globex.post(f"/v1/campaigns/{campaign_id}/choose", json={}),
            globex.post(f"/v1/campaigns/{campaign_id}/retire/{variant_id}"),
            globex.post(f"/v1/campaigns/{campaign_id}/variants", json={"n": 1}),
        ):
            assert response.status_code == 404, response.text  # 404, never 403
        sneaky = globex.post(
            "/v1/events",
            json={
                "events": [
                    {
                        "event_id": "sneak-1",
                        "type": "click",
                        "campaign_id": campaign_id,
                        "variant_id": variant_id,
                        "ts": _now(),
                    }
                ]
            },
        )
        assert sneaky.status_code == 200
        assert sneaky.json()["accepted"] == 0 and sneaky.json()["rejected"] == 1
        assert sneaky.json()["errors"][0]["field"] == "campaign_id"
        view = acme.get(f"/v1/campaigns/{campaign_id}").json()
        assert sum(v["clicks"] for v in view["variants"]) == 0


def test_keys_from_a_file_and_admin_created_keys(service) -> None:
    url, keys = service
    with client(url, keys["initech"]) as http:
        assert http.get("/v1/campaigns").json() == {"campaigns": []}
    with client(url, keys["acme"]) as http:
        refused = http.post("/v1/keys", json={"tenant": "acme"})
        assert refused.status_code == 403
    with client(url, keys["root"]) as admin:
        made = admin.post("/v1/keys", json={"tenant": "hooli"})
        assert made.status_code == 201, made.text
        assert made.json()["tenant"] == "hooli"
        bad = admin.post("/v1/keys", json={"tenant": "no spaces allowed"})
        assert bad.status_code == 422 and bad.json()["field"] == "tenant"
    with client(url, made.json()["api_key"]) as hooli:
        assert hooli.get("/v1/campaigns").status_code == 200
        _create(hooli)
        assert len(hooli.get("/v1/campaigns").json()["campaigns"]) == 1


def _status_field(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("field")


def test_bad_input_is_rejected_with_the_field_named(service) -> None:
    url, keys = service
    with client(url, keys["acme"]) as http:
        campaign = _create(http)
        campaign_id = campaign["campaign_id"]
        variant_id = campaign["variants"][0]["variant_id"]
        raw = {"headers": {"content-type": "application/json"}}

        assert _status_field(http.post("/v1/events", content=b'{"events": [', **raw)) == (
            400,
            "body",
        )
        assert _status_field(
            http.post(f"/v1/campaigns/{campaign_id}/choose", content=b"{nope", **raw)
        ) == (400, "body")
        assert _status_field(http.post("/v1/campaigns", json={"brief": "text"})) == (422, "brief")
        assert _status_field(
            http.post("/v1/campaigns", json={"brief": BRIEF, "n_candidates": "8"})
        ) == (422, "n_candidates")
        assert _status_field(
            http.post("/v1/campaigns", json={"brief": BRIEF, "colour": "red"})
        ) == (422, "colour")
        assert _status_field(http.post("/v1/campaigns", json={"brief": {"language": "en"}})) == (
            422,
            "brief.product",
        )
        assert _status_field(http.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": "3"})) == (
            422,
            "n",
        )
        assert _status_field(
            http.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": 5000})
        ) == (422, "n")
        assert _status_field(
            http.post(f"/v1/campaigns/{campaign_id}/choose", json={"segment": "m", "extra": 1})
        ) == (422, "extra")
        assert _status_field(http.post("/v1/campaigns/c_000000000000/choose", json={})) == (
            404,
            "campaign_id",
        )
        assert _status_field(http.post(f"/v1/campaigns/{campaign_id}/retire/v_000000000000")) == (
            404,
            "variant_id",
        )
        assert _status_field(http.post(f"/v1/campaigns/{campaign_id}/variants", json={})) == (
            422,
            "variants",
        )

        good = {
            "event_id": "bad-0",
            "type": "click",
            "campaign_id": campaign_id,
            "variant_id": variant_id,
            "ts": _now(),
        }
        # a NaN value (Python's json writes the NaN literal) rejects the whole request
        nan_body = json.dumps(
            {
                "events": [
                    good,
                    {**good, "event_id": "bad-1", "type": "conversion", "value": float("nan")},
                ]
            }
        ).encode()
        assert _status_field(http.post("/v1/events", content=nan_body, **raw)) == (
            422,
            "events.1.value",
        )
        assert _status_field(
            http.post("/v1/events", json={"events": [{**good, "value": -1.0}]})
        ) == (422, "events.0.value")
        assert _status_field(
            http.post("/v1/events", json={"events": [{**good, "type": "view"}]})
        ) == (422, "events.0.type")
        assert _status_field(
            http.post("/v1/events", json={"events": [{**good, "event_id": 7}]})
        ) == (422, "events.0.event_id")
        assert _status_field(http.post("/v1/events", json={"events": [{**good, "colour": 1}]})) == (
            422,
            "events.0.colour",
        )
        assert _status_field(http.post("/v1/events", json={"events": [good], "more": []})) == (
            422,
            "more",
        )
        too_many = {
            "events": [{**good, "event_id": f"m{i}"} for i in range(MAX_EVENTS_PER_BATCH + 1)]
        }
        body = json.dumps(too_many).encode()
        assert len(body) < MAX_BODY_BYTES
        response = http.post("/v1/events", content=body, **raw)
        assert _status_field(response) == (422, "events")
        assert "10000" in response.json()["message"]
        huge = b'{"events": [' + b" " * MAX_BODY_BYTES + b"]}"
        assert _status_field(http.post("/v1/events", content=huge, **raw)) == (413, "body")

        # nothing from any rejected request was applied
        view = http.get(f"/v1/campaigns/{campaign_id}").json()
        assert sum(v["clicks"] + v["conversions"] for v in view["variants"]) == 0
        # unknown variant / campaign inside an accepted request: per-row reasons, good rows kept
        mixed = http.post(
            "/v1/events",
            json={
                "events": [
                    good,
                    {**good, "event_id": "bad-2", "variant_id": "v_000000000000"},
                    {**good, "event_id": "bad-3", "campaign_id": "c_000000000000"},
                ]
            },
        ).json()
        assert mixed["accepted"] == 1 and mixed["rejected"] == 2
        assert [e["field"] for e in mixed["errors"]] == ["variant_id", "campaign_id"]


def test_srm_is_flagged_when_a_client_skews_impressions(service) -> None:
    url, keys = service
    with client(url, keys["acme"]) as http:
        honest = _create(http, impressions_reported_separately=True)
        skewed = _create(http, impressions_reported_separately=True)
        for campaign, drop_every in ((honest, None), (skewed, 2)):
            campaign_id = campaign["campaign_id"]
            decisions = []
            for _ in range(6):
                decisions += http.post(
                    f"/v1/campaigns/{campaign_id}/choose", json={"n": 500}
                ).json()["decisions"]
            dropped = campaign["variants"][0]["variant_id"]
            events = []
            for i, d in enumerate(decisions):
                # the broken client loses every other impression of one variant
                if drop_every and d["variant_id"] == dropped and i % drop_every == 0:
                    continue
                events.append(
                    {
                        "event_id": d["decision_id"],
                        "type": "impression",
                        "campaign_id": campaign_id,
                        "variant_id": d["variant_id"],
                        "decision_id": d["decision_id"],
                        "ts": _now(),
                    }
                )
            assert http.post("/v1/events", json={"events": events}).status_code == 200
            campaign["srm"] = http.get(f"/v1/campaigns/{campaign_id}").json()["data_quality"]["srm"]
        assert honest["srm"]["flagged"] is False and honest["srm"]["p_value"] > 0.001
        assert skewed["srm"]["flagged"] is True and skewed["srm"]["p_value"] < 0.001


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adloop.cli import app
    from adloop.optimizer.auth import hash_key
    from adloop.storage import Store

    db = tmp_path / "keys.duckdb"
    result = CliRunner().invoke(
        app, ["keys", "create", "--tenant", "acme", "--db", str(db), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["tenant"] == "acme" and len(body["api_key"]) > 30
    with Store(db) as store:
        assert store.api_key(hash_key(body["api_key"]))["tenant"] == "acme"
        assert store.api_key(body["api_key"]) is None
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert body["api_key"].encode() not in on_disk
    bad = CliRunner().invoke(app, ["keys", "create", "--tenant", "a b", "--db", str(db)])
    assert bad.exit_code != 0 and "tenant" in bad.output
