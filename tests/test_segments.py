"""Copy per audience segment: narrowed briefs, targeted variants, eligibility, storage, the sim.

A variant with ``segments`` is served only to requests from those segments; a request with no
segment, or from another one, gets the untargeted variants. Statistical checks use fixed seeds
and thousands of draws, so a single leak would show and none is left to chance.
"""

from __future__ import annotations

import collections
import json
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml
from test_service_support import ThreadServer
from typer.testing import CliRunner

from adloop.cli import app
from adloop.generators import Brief, BriefError, GeneratorPool, TemplateGenerator, load_brief
from adloop.optimizer import Engine, EngineConfig, InvalidRequest, NoActiveVariants
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app
from adloop.sim import ScenarioError, load_scenario
from adloop.storage import Store
from adloop.storage.schema import LATEST_VERSION, MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = ("engaged couples", "gift shoppers", "fashion lovers")
BRIEF = {
    "product": "fine jewellery",
    "brand": "Aurelle",
    "language": "en",
    "segments": list(SEGMENTS),
    "keywords": ["engagement rings", "gold necklaces"],
    "offer": "free design consultation",
    "call_to_action": "Book now",
}
ZH_BRIEF = {
    "product": "定制珠宝",
    "brand": "奥蕾尔",
    "language": "zh",
    "segments": ["新婚伴侣", "时尚达人"],
    "keywords": ["定制婚戒"],
    "offer": "免费设计咨询",
    "call_to_action": "立即预约",
}
# Two variants for everyone, one for each of two segments.
LISTED = [
    {"text": "Fine jewellery by Aurelle"},
    {"text": "Gold necklaces, made by Aurelle"},
    {"text": "Engagement rings for engaged couples", "segments": ["engaged couples"]},
    {"text": "Gifts she will love, by Aurelle", "segments": ["gift shoppers"]},
]
T0 = datetime(2026, 3, 2, 9, 0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _engine(path: Path, **config) -> Engine:
    return Engine(
        path,
        seed=11,
        clock=Clock(),
        pool=GeneratorPool(["template", "recombine"]),
        config=EngineConfig(**config) if config else None,
    )


def _targets(view: dict) -> dict[str, list[str]]:
    return {v["variant_id"]: v["segments"] for v in view["variants"]}


# -- briefs and generators -------------------------------------------------------------------


def test_for_segment_narrows_the_brief_and_its_prompt() -> None:
    brief = load_brief(BRIEF)
    narrowed = brief.for_segment("gift shoppers")
    assert narrowed.segments == ("gift shoppers",)
    assert narrowed.target_segment == "gift shoppers" and brief.target_segment is None
    assert "Write for gift shoppers only" in narrowed.prompt()
    assert "Write for" not in brief.prompt()
    assert narrowed.prompt_hash() != brief.prompt_hash()
    # Stored as the brief it came from: only the segments differ.
    assert {**narrowed.model_dump(), "segments": brief.segments} == brief.model_dump()


def test_for_segment_refuses_a_segment_the_brief_lacks() -> None:
    with pytest.raises(BriefError) as caught:
        load_brief(BRIEF).for_segment("teenagers")
    assert caught.value.field == "segments"
    assert all(repr(name) in str(caught.value) for name in SEGMENTS)
    with pytest.raises(BriefError, match="lists no segments") as caught:
        Brief(product="rings", language="en").for_segment("anyone")
    assert caught.value.field == "segments"


@pytest.mark.parametrize("data", [BRIEF, ZH_BRIEF], ids=["en", "zh"])
def test_templates_speak_to_the_segment(data: dict) -> None:
    brief = load_brief(data)
    shared = {c.text for c in TemplateGenerator().generate(brief, 12, seed=3)}
    for segment in brief.segments:
        written = TemplateGenerator().generate(brief.for_segment(segment), 12, seed=3)
        assert len(written) == 12
        # Every ad names its audience (the segment's own words), in the description.
        assert all(segment.lower() in c.description.lower() for c in written)
        others = [s for s in brief.segments if s != segment]
        assert not any(o.lower() in c.text.lower() for c in written for o in others)
        assert {c.text for c in written} != shared
        assert {c.segment for c in written} == {segment}


def test_pool_writes_for_a_segment_and_stamps_it() -> None:
    pool = GeneratorPool(["template", "recombine"])
    winners = [
        {"variant_id": "v_1", "headline": "Aurelle Rings", "description": "Book now."},
        {"variant_id": "v_2", "headline": "Gold Necklaces", "description": "Free gift."},
    ]
    result = pool.generate(BRIEF, 8, seed=5, winners=winners, segment="fashion lovers")
    assert len(result.candidates) == 8
    assert {c.generator for c in result.candidates} == {"template", "recombine"}
    assert {c.segment for c in result.candidates} == {"fashion lovers"}
    assert all(c.to_dict()["segment"] == "fashion lovers" for c in result.candidates)
    assert {c.segment for c in pool.generate(BRIEF, 4, seed=5).candidates} == {None}
    again = pool.generate(BRIEF, 8, seed=5, winners=winners, segment="fashion lovers")
    assert [c.text for c in again.candidates] == [c.text for c in result.candidates]
    with pytest.raises(BriefError, match="unknown segment 'nobody'"):
        pool.generate(BRIEF, 2, seed=0, segment="nobody")


# -- storage ---------------------------------------------------------------------------------


def _schema_4_file(path: Path) -> None:
    """A database file as adloop with schema 4 wrote it, with one campaign and variant."""
    connection = duckdb.connect(str(path))
    connection.execute(
        "CREATE TABLE schema_version "
        "(version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMP NOT NULL)"
    )
    for version, description, statements in MIGRATIONS[:4]:
        assert version <= 4
        for statement in statements:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, T0]
        )
    connection.execute(
        "INSERT INTO campaigns VALUES ('c_old', 'default', 'old', ?, 'ctr', 'active', '{}', "
        "NULL, ?, ?)",
        [json.dumps({"product": "rings", "language": "en"}), T0, T0],
    )
    connection.execute(
        "INSERT INTO variants VALUES ('v_old', 'c_old', 'Old rings', '', 'Old rings', 'en', "
        "'manual', NULL, '[]', '{}', 'active', ?, ?, NULL)",
        [T0, T0],
    )
    connection.close()


def test_schema_4_file_upgrades_in_place_and_its_variants_serve_everyone(db_path: Path) -> None:
    _schema_4_file(db_path)
    with Store(db_path) as store:
        (old,) = store.variants("c_old")
        assert old["segments"] == [] and old["text"] == "Old rings"
        store.insert_variants(
            "c_old",
            [{"variant_id": "v_new", "text": "New rings", "segments": ["mobile", "mobile"]}],
        )
        assert [v["segments"] for v in store.variants("c_old")] == [[], ["mobile"]]
    connection = duckdb.connect(str(db_path))
    try:
        rows = connection.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    finally:
        connection.close()
    assert [v for (v,) in rows] == list(range(1, LATEST_VERSION + 1)) and LATEST_VERSION >= 5
    with _engine(db_path) as engine:
        seen = collections.Counter(engine.choose("c_old").variant_id for _ in range(200))
        assert set(seen) == {"v_old"}  # the old variant serves everyone, the new one mobile
        mobile = {engine.choose("c_old", segment="mobile").variant_id for _ in range(200)}
        assert mobile == {"v_old", "v_new"}


def test_store_rejects_malformed_segments(db_path: Path) -> None:
    from adloop.storage import InvalidRecordError

    with Store(db_path) as store:
        store.insert_campaign({"campaign_id": "c_1"}, [])
        for bad in ("mobile", [""], [3]):
            with pytest.raises(InvalidRecordError, match="segments"):
                store.insert_variants("c_1", [{"variant_id": "v_1", "text": "x", "segments": bad}])


# -- serving ---------------------------------------------------------------------------------


def _leaks(engine: Engine, campaign_id: str, targets: dict[str, list[str]], n: int) -> dict:
    """Choose ``n`` times per request segment (single and batched); count what each got."""
    shown: dict[str | None, collections.Counter] = {}
    for segment in (None, *SEGMENTS, "desktop"):
        counter = collections.Counter()
        for _ in range(n // 2):
            counter[engine.choose(campaign_id, segment=segment).variant_id] += 1
        for choice in engine.choose_many(campaign_id, n // 2, segment=segment):
            counter[choice.variant_id] += 1
        shown[segment] = counter
        for variant_id in counter:
            allowed = targets[variant_id]
            assert not allowed or segment in allowed, (segment, variant_id, allowed)
    return shown


def test_a_targeted_variant_is_served_only_to_its_segments(db_path: Path) -> None:
    with _engine(db_path, floor=0.02) as engine:
        view = engine.create_campaign(BRIEF, variants=LISTED)
        campaign_id, targets = view["campaign_id"], _targets(view)
        first = _leaks(engine, campaign_id, targets, 2000)
        # The targeted variant does get its own segment's traffic.
        couples_only = next(v for v, t in targets.items() if t == ["engaged couples"])
        assert first["engaged couples"][couples_only] > 200
        # With data per segment the allocation goes hierarchical; eligibility holds still.
        clicks = []
        for i, choice in enumerate(engine.choose_many(campaign_id, 600, segment="gift shoppers")):
            if i % 5 == 0:
                clicks.append({"event_id": f"k{i}", "type": "click", "campaign_id": campaign_id,
                               "variant_id": choice.variant_id, "decision_id": choice.decision_id,
                               "segment": "gift shoppers", "ts": T0})  # fmt: skip
        engine.record(clicks)
        engine.refresh(campaign_id)
        second = _leaks(engine, campaign_id, targets, 2000)
        assert sum(second["gift shoppers"].values()) == 2000
        snapshot = engine.campaign(campaign_id)["snapshot"]
        assert set(snapshot["weights"]) == {v for v, t in targets.items() if not t}
        assert set(snapshot["targeted_weights"]) == {"engaged couples", "gift shoppers"}
        for segment, weights in snapshot["targeted_weights"].items():
            assert sum(weights.values()) == pytest.approx(1.0)
            assert set(weights) == {v for v, t in targets.items() if not t or segment in t}


def test_decisions_record_the_probability_within_the_eligible_set(db_path: Path) -> None:
    with _engine(db_path) as engine:
        campaign_id = engine.create_campaign(BRIEF, variants=LISTED)["campaign_id"]
        weights = engine.campaign(campaign_id)["snapshot"]["targeted_weights"]
        for segment in ("engaged couples", "gift shoppers"):
            for choice in engine.choose_many(campaign_id, 50, segment=segment):
                assert choice.probability == pytest.approx(weights[segment][choice.variant_id])
        untargeted = engine.campaign(campaign_id)["snapshot"]["weights"]
        choice = engine.choose(campaign_id, segment="desktop")
        assert choice.probability == pytest.approx(untargeted[choice.variant_id])


def test_only_targeted_variants_leave_other_requests_with_a_clear_error(db_path: Path) -> None:
    with _engine(db_path) as engine:
        view = engine.create_campaign(BRIEF, n_candidates=6, per_segment=True, auto_approve=True)
        campaign_id = view["campaign_id"]
        assert collections.Counter(s for t in _targets(view).values() for s in t) == dict.fromkeys(
            SEGMENTS, 2
        )
        assert all(v["generator"] == "template" for v in view["variants"])
        for segment in SEGMENTS:
            texts = {engine.choose(campaign_id, segment=segment).text for _ in range(100)}
            assert all(segment in text.lower() for text in texts)
        for segment in (None, "desktop"):
            with pytest.raises(NoActiveVariants, match="targeted to 'engaged couples'"):
                engine.choose(campaign_id, segment=segment)
        with pytest.raises(InvalidRequest) as caught:
            engine.create_campaign({"product": "rings", "language": "en"}, per_segment=True)
        assert caught.value.field == "per_segment"


def test_added_variants_are_targeted_by_hand_or_by_the_segment_written_for(db_path: Path) -> None:
    with _engine(db_path) as engine:
        campaign_id = engine.create_campaign(BRIEF, variants=LISTED[:2])["campaign_id"]
        given = engine.add_variants(
            campaign_id, [{"text": "Aurelle, for her", "segments": ["gift shoppers"]}]
        )
        assert given[0]["segments"] == ["gift shoppers"] and given[0]["status"] == "active"
        written = engine.add_variants(campaign_id, n=2, segment="fashion lovers")
        assert [v["segments"] for v in written] == [["fashion lovers"]] * 2
        assert all("fashion lovers" in v["text"].lower() for v in written)
        assert {v["status"] for v in written} == {"pending"}
        with pytest.raises(BriefError, match="unknown segment"):
            engine.add_variants(campaign_id, n=1, segment="teenagers")
        with pytest.raises(InvalidRequest) as caught:
            engine.add_variants(campaign_id, [{"text": "Rings", "segments": "gift shoppers"}])
        assert caught.value.field == "variants.0.segments"


def test_the_winner_is_untargeted_and_targeted_copy_keeps_its_segment(db_path: Path) -> None:
    with _engine(db_path) as engine:
        view = engine.create_campaign(BRIEF, variants=LISTED)
        campaign_id, targets = view["campaign_id"], _targets(view)
        ids = [v["variant_id"] for v in view["variants"]]
        strong, weak, couples_only, _ = ids
        # The targeted variant has the best rate of all; it must not win the campaign.
        rates = {strong: 0.06, weak: 0.02, couples_only: 0.12}
        events, n = [], 0
        for variant_id, rate in rates.items():
            segment = "engaged couples" if targets[variant_id] else None
            for i in range(20_000):
                n += 1
                common = {"campaign_id": campaign_id, "variant_id": variant_id,
                          "segment": segment, "ts": T0}  # fmt: skip
                events.append({"event_id": f"i{n}", "type": "impression", **common})
                if i < rate * 20_000:
                    events.append({"event_id": f"c{n}", "type": "click", **common})
        engine.record(events)
        winner = engine.declare_winner(campaign_id)
        assert winner is not None and winner["variant_id"] == strong
        assert {engine.choose(campaign_id).variant_id for _ in range(300)} == {strong}
        couples = collections.Counter(
            engine.choose(campaign_id, segment="engaged couples").variant_id for _ in range(300)
        )
        assert set(couples) <= {strong, couples_only} and couples[couples_only] > 150
        shown = engine.campaign(campaign_id)
        p_best = {v["variant_id"]: v["probability_best"] for v in shown["variants"]}
        # Within its targeting group (alone), the targeted variant is the best one.
        assert p_best[couples_only] == pytest.approx(1.0)


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db = tmp_path_factory.mktemp("segments") / "adloop.duckdb"
    engine = Engine(db, seed=5, pool=GeneratorPool(["template"]))
    key = create_key(engine.store, tenant="acme")
    with ThreadServer(create_app(engine, close_engine=True)) as server:
        yield server.url, key


def test_http_serves_targeted_variants_only_to_their_segments(service) -> None:
    url, key = service
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        created = http.post("/v1/campaigns", json={"brief": BRIEF, "variants": LISTED})
        assert created.status_code == 201, created.text
        campaign = created.json()
        campaign_id, targets = campaign["campaign_id"], _targets(campaign)
        assert sorted(map(tuple, targets.values())) == [(), (), ("engaged couples",),
                                                        ("gift shoppers",)]  # fmt: skip
        path = f"/v1/campaigns/{campaign_id}/choose"
        for segment in (None, *SEGMENTS):
            body = {} if segment is None else {"segment": segment}
            # single choices (the fast path answers these) and a batch (the route)
            shown = [http.post(path, json=body).json()["variant_id"] for _ in range(150)]
            batch = http.post(path, json={**body, "n": 500}).json()["decisions"]
            shown += [d["variant_id"] for d in batch]
            for variant_id in shown:
                assert not targets[variant_id] or segment in targets[variant_id]
            if segment == "engaged couples":
                assert any(targets[v] for v in shown)
        added = http.post(
            f"/v1/campaigns/{campaign_id}/variants", json={"n": 2, "segment": "fashion lovers"}
        )
        assert added.status_code == 201, added.text
        assert [v["segments"] for v in added.json()["added"]] == [["fashion lovers"]] * 2
        listed = http.post(
            f"/v1/campaigns/{campaign_id}/variants",
            json={"variants": [{"text": "Chic gold, by Aurelle", "segments": ["fashion lovers"]}]},
        )
        assert listed.status_code == 201 and listed.json()["added"][0]["segments"] == [
            "fashion lovers"
        ]
        unknown = http.post(
            f"/v1/campaigns/{campaign_id}/variants", json={"n": 1, "segment": "teenagers"}
        )
        assert unknown.status_code == 422 and "segments" in unknown.text
        view = http.get(f"/v1/campaigns/{campaign_id}").json()
        assert sorted(len(v["segments"]) for v in view["variants"]) == [0, 0, 1, 1, 1, 1, 1]
        per_segment = http.post(
            "/v1/campaigns",
            json={"brief": BRIEF, "n_candidates": 3, "per_segment": True, "auto_approve": True},
        ).json()
        other = http.post(f"/v1/campaigns/{per_segment['campaign_id']}/choose", json={})
        assert other.status_code == 409 and "targeted to" in other.json()["message"]


# -- CLI -------------------------------------------------------------------------------------


def test_cli_adds_targeted_variants_and_shows_them(tmp_path: Path) -> None:
    brief_file, db = tmp_path / "brief.yaml", tmp_path / "a.duckdb"
    brief_file.write_text(yaml.safe_dump({**BRIEF, "variants": LISTED[:2]}))
    runner = CliRunner()
    created = runner.invoke(app, ["campaign", "create", "--brief", str(brief_file),
                                  "--db", str(db), "--json"])  # fmt: skip
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.output)["campaign_id"]
    added = runner.invoke(
        app,
        ["variants", "add", campaign_id, "--db", str(db), "--text", "Aurelle gifts",
         "--segment", "gift shoppers", "--json"],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["added"][0]["segments"] == ["gift shoppers"]
    listed = runner.invoke(app, ["variants", "list", campaign_id, "--db", str(db), "--json"])
    segments = [v["segments"] for v in json.loads(listed.output)["variants"]]
    assert segments == [[], [], ["gift shoppers"]]


# -- simulator -------------------------------------------------------------------------------


def test_per_segment_scenario_needs_brief_segments_the_world_has() -> None:
    data = yaml.safe_load((ROOT / "examples" / "scenario_segments.yaml").read_text())
    data["generators"]["per_segment"] = True
    data["brief"]["segments"] = ["engaged couples", "teenagers"]
    with pytest.raises(ScenarioError, match="teenagers") as caught:
        load_scenario(data)
    assert caught.value.key_path == "generators.per_segment"


def test_per_segment_copy_beats_one_shared_pool_in_the_simulator(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "scenario_segments.yaml").read_text())
    # Smaller than the study (seeds 0..19, 36 h): three seeds fixed here, 16 hours each.
    data["traffic"] = {"hours": 16, "impressions_per_hour": 1200, "daily_cycle": 0.3}
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sim", "segments", "--scenario", str(scenario),
                                      "--seeds", "0-2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "segments.json").read_text())
    assert (out / "segments.md").read_text().startswith("# Per-segment copy")
    assert report["seeds"] == [0, 1, 2]
    rows = {(r["seed"], r["arm"]): r for r in report["rows"]}
    for seed in (0, 1, 2):
        shared, targeted = rows[(seed, "shared")], rows[(seed, "targeted")]
        assert shared["n_variants"] == targeted["n_variants"] == 9
        # Expected clicks (true CTR of what was served): per-segment copy wins every seed.
        assert targeted["expected_clicks"] > shared["expected_clicks"]
    summary = report["summary"]
    assert summary["clicks_lift"]["mean"] > 0 and summary["expected_clicks_lift"]["low"] > 0
