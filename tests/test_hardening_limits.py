"""Hardening against a hostile or careless tenant, on a real server: per-campaign limits on
segments (an explicit "other" bucket) and variants, no engine-wide lock held while the
generators write, and the brief's filters applied to variants given by hand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from test_service_support import ThreadServer

from adloop.generators import Candidate, PoolResult
from adloop.optimizer import Engine, EngineConfig
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app

BRIEF = {"product": "bespoke engagement rings", "language": "en"}
VARIANTS = [{"text": "Rings made for you"}, {"text": "Bespoke rings in gold"}]


def _serve(engine: Engine, *tenants: str) -> tuple[ThreadServer, dict[str, httpx.Client]]:
    keys = {tenant: create_key(engine.store, tenant=tenant) for tenant in tenants}
    server = ThreadServer(create_app(engine, close_engine=True)).__enter__()
    clients = {
        tenant: httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
        )
        for tenant, key in keys.items()
    }
    return server, clients


def _close(server: ThreadServer, clients: dict[str, httpx.Client]) -> None:
    for http in clients.values():
        http.close()
    server.__exit__(None, None, None)


def _create(http: httpx.Client, brief: dict = BRIEF, variants: list = VARIANTS) -> dict:
    response = http.post("/v1/campaigns", json={"brief": brief, "variants": variants})
    assert response.status_code == 201, response.text
    return response.json()


# -- class 3: cardinality -------------------------------------------------------------------


def test_segments_beyond_the_limit_share_the_campaign_wide_allocation(tmp_path: Path):
    config = EngineConfig(max_segments_per_campaign=3, background=False)
    engine = Engine(tmp_path / "a.duckdb", config=config)
    server, clients = _serve(engine, "hostile")
    try:
        http = clients["hostile"]
        view = _create(http)
        campaign_id = view["campaign_id"]
        variant_ids = [v["variant_id"] for v in view["variants"]]
        ts = (datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)).isoformat()
        events = []
        for s in range(60):  # s0..s2 are the busiest; the other 57 fall in "other"
            n = 60 if s < 3 else 4
            for i in range(n):
                variant = variant_ids[i % 2]
                base = {"campaign_id": campaign_id, "variant_id": variant, "segment": f"s{s}"}
                events.append({**base, "event_id": f"i-{s}-{i}", "type": "impression", "ts": ts})
                if (i + s) % 3 == 0:
                    events.append({**base, "event_id": f"c-{s}-{i}", "type": "click", "ts": ts})
        response = http.post("/v1/events", json={"events": events})
        assert response.status_code == 200, response.text
        engine.refresh(campaign_id)

        def split(segment: str | None) -> dict[str, float]:
            body = {"n": 100} if segment is None else {"n": 100, "segment": segment}
            answer = http.post(f"/v1/campaigns/{campaign_id}/choose", json=body)
            assert answer.status_code == 200, answer.text
            return {d["variant_id"]: d["probability"] for d in answer.json()["decisions"]}

        overall = split(None)
        for rare in ("s10", "s59", "never-seen"):
            assert split(rare) == overall, rare  # the "other" bucket: campaign-wide split
    finally:
        _close(server, clients)


def test_variants_beyond_the_limit_get_422_naming_the_field_and_fix(tmp_path: Path):
    engine = Engine(tmp_path / "a.duckdb", config=EngineConfig(max_variants_per_campaign=3))
    server, clients = _serve(engine, "acme")
    try:
        http = clients["acme"]
        too_many = [{"text": f"Rings for you, style {i}"} for i in range(4)]
        response = http.post("/v1/campaigns", json={"brief": BRIEF, "variants": too_many})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "variants"
        assert "max_variants_per_campaign" in body["message"]
        assert "retire" in body["message"]

        campaign_id = _create(http)["campaign_id"]
        more = [{"text": "Gold rings, made to fit"}, {"text": "Rings in platinum"}]
        response = http.post(f"/v1/campaigns/{campaign_id}/variants", json={"variants": more})
        assert response.status_code == 422, response.text
        assert "max_variants_per_campaign" in response.json()["message"]
        one = {"variants": more[:1]}
        assert http.post(f"/v1/campaigns/{campaign_id}/variants", json=one).status_code == 201
    finally:
        _close(server, clients)


class _SlowPool:
    """A generator pool whose refills block until released (a language model at work)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def generate(self, brief, n, *, existing_texts, winners, seed, time_budget_s):
        self.calls += 1
        if self.calls > 1:  # the first call creates the campaign; refills block
            self.started.set()
            assert self.release.wait(30), "the test never released the generator"
        texts = [f"Aurelle rings, style {self.calls}-{i}" for i in range(n)]
        return PoolResult(candidates=[Candidate(t, "", "en", "template") for t in texts])


def test_refill_does_not_hold_the_engine_lock_while_generating(tmp_path: Path):
    pool = _SlowPool()
    engine = Engine(tmp_path / "a.duckdb", pool=pool)
    server, clients = _serve(engine, "slow", "other")
    try:
        slow = clients["slow"].post(
            "/v1/campaigns", json={"brief": BRIEF, "n_candidates": 3, "auto_approve": True}
        )
        assert slow.status_code == 201, slow.text
        campaign_id = slow.json()["campaign_id"]
        variant_id = slow.json()["variants"][0]["variant_id"]
        retired = clients["slow"].post(f"/v1/campaigns/{campaign_id}/retire/{variant_id}")
        assert retired.status_code == 200, retired.text

        outcome: dict = {}
        refill = threading.Thread(
            target=lambda: outcome.update(engine.retire_and_refill(campaign_id)), daemon=True
        )
        refill.start()
        assert pool.started.wait(20), "the refill never asked the generators"
        # While the generators write, another tenant creates and serves a campaign.
        other = _create(clients["other"])
        choice = clients["other"].post(f"/v1/campaigns/{other['campaign_id']}/choose", json={})
        assert choice.status_code == 200, choice.text
        assert not outcome, "the refill finished early: the test proved nothing"
        pool.release.set()
        refill.join(30)
        assert len(outcome["added"]) == 1
    finally:
        pool.release.set()
        _close(server, clients)


# -- class 9: filters for variants given by hand --------------------------------------------

STRICT_BRIEF = {
    "product": "engagement rings",
    "brand": "Aurelle",
    "language": "en",
    "banned_terms": ["cheap", "guaranteed", "best price"],
    "required_terms": ["Aurelle"],
}


def test_hand_given_variants_pass_the_brief_filters_or_record_an_override(tmp_path: Path):
    engine = Engine(tmp_path / "a.duckdb")
    server, clients = _serve(engine, "acme")
    try:
        http = clients["acme"]
        bad = [{"text": "Aurelle rings for you"}, {"text": "Cheap rings, guaranteed best price!"}]
        response = http.post("/v1/campaigns", json={"brief": STRICT_BRIEF, "variants": bad})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "variants.1"
        assert "banned_term" in body["message"] and "'cheap'" in body["message"]

        no_brand = [{"text": "Rings made for you"}]
        response = http.post("/v1/campaigns", json={"brief": STRICT_BRIEF, "variants": no_brand})
        assert response.status_code == 422
        assert "missing_required_term" in response.json()["message"]

        campaign_id = _create(http, STRICT_BRIEF, bad[:1])["campaign_id"]
        path = f"/v1/campaigns/{campaign_id}/variants"
        unexplained = {"variants": [{**bad[1], "override_filters": True}]}
        response = http.post(path, json=unexplained)
        assert response.status_code == 422
        assert response.json()["field"] == "variants.0.override_reason"

        why = "legal approved this claim for the spring sale"
        insisted = {"variants": [{**bad[1], "override_filters": True, "override_reason": why}]}
        response = http.post(path, json=insisted)
        assert response.status_code == 201, response.text
        override = response.json()["added"][0]["filter_override"]
        assert override["reason"] == why
        assert override["by"] == "acme"
        assert override["overrode"].startswith("banned_term")
        shown = {
            v["variant_id"]: v for v in http.get(f"/v1/campaigns/{campaign_id}").json()["variants"]
        }
        assert shown[response.json()["added"][0]["variant_id"]]["filter_override"] == override
        assert [v["filter_override"] for v in shown.values()].count(None) == len(shown) - 1
    finally:
        _close(server, clients)
