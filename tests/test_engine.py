"""The in-process engine on a real DuckDB file: choosing, recording, refreshing, pool changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from adloop.optimizer import (
    CampaignNotFound,
    ConfigError,
    Engine,
    EngineConfig,
    InvalidRequest,
    VariantNotFound,
    srm_check,
)

BRIEF = {
    "product": "bespoke engagement rings",
    "brand": "Aurelle",
    "language": "en",
    "description": "Made-to-measure rings in recycled gold.",
    "offer": "free design consultation",
    "call_to_action": "Book now",
    "keywords": ["engagement ring", "bespoke ring"],
}
TEXTS = ["Rings made for you", "Bespoke rings in gold", "Your ring, your story"]


class FakeClock:
    """Simulated time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _brief_with_variants(texts=TEXTS) -> dict:
    return {**BRIEF, "variants": [{"text": t} for t in texts]}


def _events(campaign_id: str, variant_id: str, kind: str, n: int, start: int, ts: datetime) -> list:
    return [
        {
            "event_id": f"{kind}-{variant_id}-{start + i}",
            "type": kind,
            "campaign_id": campaign_id,
            "variant_id": variant_id,
            "ts": ts,
        }
        for i in range(n)
    ]


def _traffic(campaign_id: str, counts: dict[str, tuple[int, int]], ts: datetime) -> list:
    """Impression and click events per variant, from ``{variant_id: (impressions, clicks)}``."""
    return [
        event
        for variant_id, (impressions, clicks) in counts.items()
        for kind, n in (("impression", impressions), ("click", clicks))
        for event in _events(campaign_id, variant_id, kind, n, 0, ts)
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _pool():
    from adloop.generators import GeneratorPool

    # no language model in the default tests: template + recombination only
    return GeneratorPool(["template", "recombine"])


@pytest.fixture
def engine(db_path: Path, clock: FakeClock):
    with Engine(db_path, clock=clock, seed=3, pool=_pool()) as engine:
        yield engine


def test_create_campaign_with_listed_variants_serves_them(engine: Engine) -> None:
    view = engine.create_campaign(_brief_with_variants())
    assert view["status"] == "active"
    assert [v["text"] for v in view["variants"]] == TEXTS
    assert all(v["generator"] == "manual" for v in view["variants"])
    choice = engine.choose(view["campaign_id"])
    assert choice.variant_id in {v["variant_id"] for v in view["variants"]}
    assert choice.decision_id.startswith("d_") and len(choice.decision_id) == 18
    assert 0 < choice.probability <= 1
    assert choice.text in TEXTS


def test_create_campaign_generates_pool_without_a_language_model(engine: Engine) -> None:
    view = engine.create_campaign(BRIEF, n_candidates=5)
    texts = [v["text"] for v in view["variants"]]
    assert 1 <= len(texts) <= 5
    assert len(set(texts)) == len(texts)
    assert all(v["generator"] != "manual" for v in view["variants"])


def test_bad_brief_and_arguments_name_the_field(engine: Engine) -> None:
    from adloop.generators import BriefError

    with pytest.raises(BriefError) as error:
        engine.create_campaign({"language": "en", "variants": [{"text": "x"}]})
    assert error.value.field == "product"
    with pytest.raises(InvalidRequest) as bad:
        engine.create_campaign(_brief_with_variants(), objective="clicks")
    assert bad.value.field == "objective"
    with pytest.raises(InvalidRequest) as dup:
        engine.create_campaign(_brief_with_variants(["same", "same"]))
    assert dup.value.field == "variants.1.text"
    assert engine.campaigns() == []  # nothing half-created


def test_same_seed_same_decisions(tmp_path: Path, clock: FakeClock) -> None:
    runs = []
    for name in ("a", "b"):
        with Engine(tmp_path / f"{name}.duckdb", clock=clock, seed=11) as engine:
            campaign_id = engine.create_campaign(_brief_with_variants())["campaign_id"]
            runs.append([engine.choose(campaign_id)[1:] for _ in range(200)])
    assert runs[0] == runs[1]


def test_choices_follow_snapshot_weights_and_log_impressions(engine: Engine) -> None:
    campaign_id = engine.create_campaign(_brief_with_variants())["campaign_id"]
    n = 3000
    chosen = [engine.choose(campaign_id).variant_id for _ in range(n)]
    view = engine.campaign(campaign_id)
    impressions = {v["variant_id"]: v["impressions"] for v in view["variants"]}
    # every decision logged exactly one impression (event_id = decision_id)
    assert sum(impressions.values()) == n
    for variant_id, count in impressions.items():
        assert chosen.count(variant_id) == count
    assert view["data_quality"]["decisions"] == n
    assert view["data_quality"]["srm"]["flagged"] is False


def test_a_read_sees_decisions_another_thread_is_still_handing_to_the_store(
    engine: Engine,
) -> None:
    """Engine.campaign flushes, then reads: a flush that another thread (the background
    flusher, another request) started must be handed to the store before the read."""
    import threading

    campaign_id = engine.create_campaign(_brief_with_variants())["campaign_id"]
    for _ in range(10):
        engine.choose(campaign_id)
    store = engine.store
    handing = threading.Event()
    real = store.log_decisions

    def slow_log_decisions(*args, **kwargs):  # the other thread is slow to hand its batch over
        handing.set()
        threading.Event().wait(0.5)
        return real(*args, **kwargs)

    store.log_decisions = slow_log_decisions
    try:
        other = threading.Thread(target=engine.flush)
        other.start()
        assert handing.wait(5)
        store.log_decisions = real
        view = engine.campaign(campaign_id)  # while the other thread still holds the batch
        other.join()
    finally:
        store.log_decisions = real
    assert sum(v["impressions"] for v in view["variants"]) == 10


def test_request_id_gives_the_same_decision_once(engine: Engine) -> None:
    campaign_id = engine.create_campaign(_brief_with_variants())["campaign_id"]
    first = engine.choose(campaign_id, request_id="req-1")
    again = engine.choose(campaign_id, request_id="req-1")
    assert first == again
    engine.flush()
    assert sum(v["impressions"] for v in engine.campaign(campaign_id)["variants"]) == 1


def test_record_then_refresh_moves_traffic_to_the_better_variant(
    engine: Engine, clock: FakeClock
) -> None:
    view = engine.create_campaign(_brief_with_variants())
    campaign_id = view["campaign_id"]
    ids = [v["variant_id"] for v in view["variants"]]
    clicks = [20, 20, 120]
    events = _traffic(
        campaign_id, {v: (2000, c) for v, c in zip(ids, clicks, strict=True)}, clock()
    )
    result = engine.record(events)
    assert result.accepted == len(events) and result.rejected == 0
    engine.refresh(campaign_id)
    weights = engine.campaign(campaign_id)["snapshot"]["weights"]
    assert weights[ids[2]] > 0.95
    picks = [engine.choose(campaign_id).variant_id for _ in range(500)]
    assert picks.count(ids[2]) > 450
    # replaying the same batch adds nothing
    again = engine.record(events)
    assert again.accepted == 0 and again.duplicates == len(events)


def test_simulated_clock_refreshes_inline_after_interval(tmp_path: Path, clock: FakeClock) -> None:
    config = EngineConfig(refresh_interval=60.0, refresh_events=10**9)
    with Engine(tmp_path / "s.duckdb", clock=clock, seed=5, config=config) as engine:
        view = engine.create_campaign(_brief_with_variants(TEXTS[:2]))
        campaign_id, (a, b) = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
        built = engine.campaign(campaign_id)["snapshot"]["built_at"]
        engine.record(_traffic(campaign_id, {a: (1000, 100), b: (1000, 0)}, clock()))
        assert engine.campaign(campaign_id)["snapshot"]["built_at"] == built  # not yet due
        clock.advance(61)
        engine.record(_events(campaign_id, b, "impression", 1, 5000, clock()))
        snapshot = engine.campaign(campaign_id)["snapshot"]
        assert snapshot["built_at"] != built
        assert snapshot["weights"][a] > 0.99


def test_segments_get_their_own_allocation(engine: Engine, clock: FakeClock) -> None:
    view = engine.create_campaign(_brief_with_variants(TEXTS[:2]))
    campaign_id, (a, b) = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
    events = []
    for segment, winner in (("mobile", a), ("desktop", b)):
        for variant_id in (a, b):
            clicks = 200 if variant_id == winner else 10
            for kind, n in (("impression", 3000), ("click", clicks)):
                events += [
                    {**e, "event_id": f"{segment}-{e['event_id']}", "segment": segment}
                    for e in _events(campaign_id, variant_id, kind, n, 0, clock())
                ]
    engine.record(events)
    engine.refresh(campaign_id)
    mobile = [engine.choose(campaign_id, segment="mobile").variant_id for _ in range(300)]
    desktop = [engine.choose(campaign_id, segment="desktop").variant_id for _ in range(300)]
    assert mobile.count(a) > 270 and desktop.count(b) > 270
    assert set(engine.campaign(campaign_id)["snapshot"]["segments"]) == {"mobile", "desktop"}


def test_retired_variant_gets_no_traffic_and_added_variant_serves_at_once(engine: Engine) -> None:
    view = engine.create_campaign(_brief_with_variants())
    campaign_id, ids = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
    engine.retire(campaign_id, ids[0])
    assert ids[0] not in {engine.choose(campaign_id).variant_id for _ in range(500)}
    added = engine.add_variants(campaign_id, [{"headline": "New ring", "description": "in gold"}])
    assert added[0]["text"] == "New ring — in gold"
    assert added[0]["variant_id"] in {engine.choose(campaign_id).variant_id for _ in range(500)}
    statuses = {v["variant_id"]: v["status"] for v in engine.campaign(campaign_id)["variants"]}
    assert statuses[ids[0]] == "retired"
    with pytest.raises(VariantNotFound):
        engine.retire(campaign_id, "v_000000000000")
    with pytest.raises(InvalidRequest):
        engine.add_variants(campaign_id, [{"text": TEXTS[1]}])  # already in the campaign


def test_retire_and_refill_replaces_clear_losers(engine: Engine, clock: FakeClock) -> None:
    view = engine.create_campaign(BRIEF, n_candidates=4, auto_approve=True)
    campaign_id, ids = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
    clicks = [250] + [40] * (len(ids) - 1)
    events = _traffic(
        campaign_id, {v: (5000, c) for v, c in zip(ids, clicks, strict=True)}, clock()
    )
    engine.record(events)
    outcome = engine.retire_and_refill(campaign_id)
    assert set(outcome["retired"]) == set(ids[1:])
    assert 1 <= len(outcome["added"]) <= len(ids) - 1
    active = [v for v in engine.campaign(campaign_id)["variants"] if v["status"] == "active"]
    assert ids[0] in {v["variant_id"] for v in active}
    new_ids = {v["variant_id"] for v in outcome["added"]}
    served = {engine.choose(campaign_id).variant_id for _ in range(3000)}
    assert served & new_ids  # fresh challengers get traffic immediately
    assert not served & set(ids[1:])


def test_declare_winner_follows_the_stopping_rule(engine: Engine, clock: FakeClock) -> None:
    view = engine.create_campaign(_brief_with_variants(TEXTS[:2]))
    campaign_id, (a, b) = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
    assert engine.declare_winner(campaign_id) is None  # no evidence yet
    engine.record(_traffic(campaign_id, {a: (20000, 400), b: (20000, 700)}, clock()))
    decision = engine.declare_winner(campaign_id)
    assert decision is not None and decision["variant_id"] == b
    view = engine.campaign(campaign_id)
    assert view["winner"] == b and view["status"] == "completed"
    assert {engine.choose(campaign_id).variant_id for _ in range(100)} == {b}


def test_campaign_view_has_posterior_fields(engine: Engine, clock: FakeClock) -> None:
    view = engine.create_campaign(_brief_with_variants(TEXTS[:2]))
    campaign_id, (a, b) = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
    engine.record(_traffic(campaign_id, {a: (1000, 50), b: (1000, 0)}, clock()))
    variants = {v["variant_id"]: v for v in engine.campaign(campaign_id)["variants"]}
    assert variants[a]["clicks"] == 50 and variants[a]["impressions"] == 1000
    low, high = variants[a]["interval_95"]
    assert low < variants[a]["posterior_mean"] < high
    assert 0.03 < variants[a]["posterior_mean"] < 0.07
    assert variants[a]["probability_best"] > 0.99
    assert variants[a]["probability_best"] + variants[b]["probability_best"] == pytest.approx(1.0)


def test_tenants_are_isolated(engine: Engine) -> None:
    mine = engine.create_campaign(_brief_with_variants(), tenant="acme")["campaign_id"]
    engine.create_campaign(_brief_with_variants(), tenant="globex")
    assert [c["campaign_id"] for c in engine.campaigns("acme")] == [mine]
    with pytest.raises(CampaignNotFound):
        engine.choose(mine, tenant="globex")
    with pytest.raises(CampaignNotFound):
        engine.campaign(mine, tenant="globex")
    result = engine.record(
        [
            {
                "event_id": "x1",
                "type": "click",
                "campaign_id": mine,
                "variant_id": engine.campaign(mine)["variants"][0]["variant_id"],
                "ts": engine.clock(),
            }
        ],
        tenant="globex",
    )
    assert result.accepted == 0 and result.rejected == 1
    assert result.errors[0].field == "campaign_id"


def test_restart_rebuilds_state_from_the_store(db_path: Path, clock: FakeClock) -> None:
    with Engine(db_path, clock=clock, seed=1) as engine:
        view = engine.create_campaign(_brief_with_variants(TEXTS[:2]))
        campaign_id, (a, b) = view["campaign_id"], [v["variant_id"] for v in view["variants"]]
        engine.record(_traffic(campaign_id, {a: (3000, 300), b: (3000, 30)}, clock()))
        for _ in range(10):
            engine.choose(campaign_id)
        before = engine.campaign(campaign_id)
    with Engine(db_path, clock=clock, seed=2) as engine:
        after = engine.campaign(campaign_id)
        assert [v["impressions"] for v in after["variants"]] == [
            v["impressions"] for v in before["variants"]
        ]
        assert after["snapshot"]["weights"][a] > 0.95
        assert engine.choose(campaign_id).variant_id in {v["variant_id"] for v in after["variants"]}


def test_srm_check_flags_skewed_impressions() -> None:
    assigned = {"a": 5000.0, "b": 5000.0}
    assert srm_check({"a": 5010, "b": 4990}, assigned)["flagged"] is False
    skewed = srm_check({"a": 5000, "b": 4500}, assigned)
    assert skewed["flagged"] is True and skewed["p_value"] < 0.001
    assert srm_check({"a": 10, "b": 2}, assigned)["p_value"] is None  # too little data
    # against unequal assignment shares: matching counts are fine
    assert srm_check({"a": 9000, "b": 1000}, {"a": 0.9, "b": 0.1})["flagged"] is False


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError) as error:
        EngineConfig(refresh_interval=0)
    assert error.value.field == "refresh_interval"
    assert "got 0" in str(error.value)
    with pytest.raises(ValueError, match="floor: got 1.5; use a share in"):
        EngineConfig(floor=1.5)
    with pytest.raises(ConfigError, match="'ts'") as policy:
        EngineConfig(policy="thompson")
    assert policy.value.field == "policy"
    with pytest.raises(ConfigError) as half_life:
        EngineConfig(half_life=timedelta(0))
    assert half_life.value.field == "half_life"


def test_choose_many_is_vectorized_and_logged(engine: Engine) -> None:
    campaign_id = engine.create_campaign(_brief_with_variants())["campaign_id"]
    choices = engine.choose_many(campaign_id, 500)
    assert len({c.decision_id for c in choices}) == 500
    shares = np.bincount([TEXTS.index(c.text) for c in choices], minlength=3) / 500
    assert shares.min() > 0.2
    engine.flush()
    assert engine.campaign(campaign_id)["data_quality"]["decisions"] == 500
    with pytest.raises(InvalidRequest):
        engine.choose_many(campaign_id, 0)


def test_choose_many_repeats_with_the_seed_and_logs_snapshot_probabilities(
    tmp_path: Path, clock: FakeClock
) -> None:
    runs = []
    for name in ("a", "b"):
        with Engine(tmp_path / f"{name}.duckdb", clock=clock, seed=4) as engine:
            view = engine.create_campaign(_brief_with_variants())
            choices = engine.choose_many(view["campaign_id"], 200)
            weights = view["snapshot"]["weights"]
            assert all(c.probability == pytest.approx(weights[c.variant_id]) for c in choices)
            runs.append([c[1:] for c in choices])
    assert runs[0] == runs[1]
