"""The simulator's world, scenarios, fast mode and replay (no engine, no storage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from adloop.bandits import POLICIES, EpsilonGreedy, ThompsonSampling
from adloop.cli import app
from adloop.sim import (
    REPLAY_POLICIES,
    ReplayError,
    ReplayProblems,
    ScenarioError,
    Segment,
    SimError,
    World,
    WorldError,
    check_world,
    cross_fitted_prior,
    features,
    load_scenario,
    make_policy,
    replay,
    simulate,
    simulate_batched,
)
from adloop.sim.features import KEYWORD_CAP

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEXTS = [
    "Bespoke engagement rings, made to measure",
    "Shop 18k gold rings today — 20% off!",
    "Timeless elegance, handcrafted in Paris",
    "Looking for a ring as unique as you?",
    "臻品钻戒，限时礼遇，立即预约专属定制！",
]

# ---------------------------------------------------------------- features


def test_features_are_interpretable_in_english_and_chinese() -> None:
    english = features("Shop bespoke rings today — 20% off!")
    assert english["cta"] == 1 and english["urgency"] == 1
    assert english["has_number"] == 1 and english["exclamation"] == 1 and english["question"] == 0
    assert english["kw_custom"] == 1 and english["zh"] == 0
    chinese = features("臻品钻戒，限时礼遇，立即预约专属定制？")
    assert chinese["zh"] == 1 and chinese["question"] == 1
    assert chinese["urgency"] >= 1 and chinese["cta"] >= 2 and chinese["kw_custom"] >= 2
    # a whole-word match only: "shopping" is not the verb "shop"
    assert features("window shopping")["cta"] == 0
    custom = features("Platinum rings", lexicon={"metal": ["platinum", "rings"]})
    assert custom["kw_metal"] == 2 and "kw_luxury" not in custom


def test_word_features_saturate_so_stuffing_earns_nothing() -> None:
    one = features("Bespoke rings by Aurelle")
    assert one["kw_custom"] == 1
    # a repeated word counts once
    assert features("Bespoke bespoke rings, bespoke — Aurelle")["kw_custom"] == 1
    assert features("限时定制 定制 定制 定制")["kw_custom"] == 1
    # a second, different word counts; a third does not
    assert features("Bespoke, engraved rings by Aurelle")["kw_custom"] == 2
    assert features("Bespoke, engraved, personalised, tailored rings")["kw_custom"] == KEYWORD_CAP
    assert features("Shop now, shop today, order now")["cta"] == 2
    assert features("Shop now, shop today, order now")["urgency"] == 2


# ---------------------------------------------------------------- world


def test_world_is_deterministic_per_seed_and_seeds_differ() -> None:
    first, again, other = World(seed=5), World(seed=5), World(seed=6)
    rates = first.true_rates(TEXTS)
    assert np.array_equal(rates.ctr, again.true_rates(TEXTS).ctr)
    assert np.array_equal(rates.cvr, again.true_rates(TEXTS).cvr)
    assert not np.array_equal(rates.ctr, other.true_rates(TEXTS).ctr)
    impressions = np.full((3, len(TEXTS)), 20_000)
    first.reset(seed=9)
    again.reset(seed=9)
    one, two = first.step(rates, impressions), again.step(rates, impressions)
    assert np.array_equal(one.clicks, two.clicks)
    assert np.array_equal(one.conversions, two.conversions)
    first.reset(seed=10)
    assert not np.array_equal(first.step(rates, impressions).clicks, one.clicks)


def test_world_rates_are_plausible_and_never_tie() -> None:
    world = World(seed=2)
    check_world(world, TEXTS)
    texts = [f"Aurelle rings, collection {i}" for i in range(300)]
    rates = world.true_rates(texts)
    assert 0.005 < float(np.median(rates.ctr)) < 0.04
    assert 0.005 < float(np.median(rates.cvr)) < 0.15
    for column in rates.ctr.T:
        assert len(set(column.tolist())) == len(texts)


def test_segment_preferences_move_ctr_in_the_documented_direction() -> None:
    world = World(
        segments=[
            Segment(name="deals", share=0.5, ctr_weights={"has_number": 1.0}),
            Segment(name="luxury", share=0.5, ctr_weights={"kw_luxury": 1.0}),
        ],
        idiosyncratic_sd=0.0,
    )
    rates = world.true_rates(["Rings 20% less", "Luxury rings"])
    deals, luxury = rates.ctr[:, 0], rates.ctr[:, 1]
    assert deals[0] > deals[1] and luxury[1] > luxury[0]


def test_fatigue_and_preference_shift() -> None:
    world = World(
        segments=[Segment(name="all", share=1.0)],
        fatigue_half_life=1000,
        fatigue_floor=0.5,
        preference_shift={"all": {"question": 1.0}},
        seed=1,
    )
    assert world.fatigue(np.array([0.0, 1000.0, 1e9])).tolist() == pytest.approx([1, 0.75, 0.5])
    before = world.true_rates(["Why gold?"]).ctr[0, 0]
    after = world.true_rates(["Why gold?"], shifted=True).ctr[0, 0]
    assert after > 2 * before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"segments": [Segment(name="a", share=0.5)]},
        {"base_ctr": 1.5},
        {"segments": [Segment(name="a", share=1.0, ctr_weights={"nope": 1.0})]},
        {"preference_shift": {"ghost": {"cta": 1.0}}},
    ],
)
def test_world_rejects_bad_configuration(kwargs: dict) -> None:
    with pytest.raises(WorldError):
        World(**kwargs)


def test_step_rejects_wrong_shapes() -> None:
    world = World(seed=1)
    with pytest.raises(WorldError, match="shape"):
        world.step(TEXTS[:2], np.ones((1, 2), dtype=int))


# ---------------------------------------------------------------- scenarios


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("scenario_*.yaml")), ids=lambda p: p.name)
def test_example_scenarios_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    copy = tmp_path / "copy.yaml"
    copy.write_text(scenario.to_yaml(), encoding="utf-8")
    assert load_scenario(copy) == scenario
    assert load_scenario(path, seed=99).seed == 99


@pytest.mark.parametrize(
    ("change", "key_path"),
    [
        ({"trafic": {"hours": 3}}, "trafic"),
        ({"traffic": {"hours": 0}}, "traffic.hours"),
        ({"traffic": {"impressions_per_hour": "lots"}}, "traffic.impressions_per_hour"),
        ({"traffic": {"start": "yesterday"}}, "traffic.start"),
        ({"policy": {"name": "thompson"}}, "policy.name"),
        ({"policy": {"flor": 0.1}}, "policy.flor"),
        ({"conversions": {"delay_mean_hours": -1}}, "conversions.delay_mean_hours"),
        ({"invalid_traffic": {"duplicate_rate": 1.5}}, "invalid_traffic.duplicate_rate"),
        ({"world": {"segments": [{"name": "a", "share": 0.4}]}}, "world.segments"),
        (
            {"world": {"segments": [{"name": "a", "share": 1, "ctr_weights": {"vibes": 1}}]}},
            "world.segments[0].ctr_weights.vibes",
        ),
        (
            {"world": {"segments": [{"name": "a", "share": 1, "colour": 1}]}},
            "world.segments[0].colour",
        ),
        (
            {"drift": {"preference_shift": {"enabled": True, "deltas": {"ghosts": {"cta": 1}}}}},
            "drift.preference_shift.deltas.ghosts",
        ),
        ({"retraining": {"every_hours": 0}}, "retraining.every_hours"),
        ({"variants": ["same", "same"]}, "variants"),
    ],
)
def test_bad_scenarios_fail_naming_the_key(change: dict, key_path: str) -> None:
    data = {"variants": ["Bespoke rings", "Rings today"], **change}
    with pytest.raises(ScenarioError) as caught:
        load_scenario(data)
    assert caught.value.key_path == key_path
    assert key_path in str(caught.value)


def test_scenario_needs_a_brief_or_variants_and_reads_brief_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario({"traffic": {"hours": 2}})
    assert caught.value.key_path == "brief"
    (tmp_path / "brief.yaml").write_text("product: rings\nlanguage: en\n")
    (tmp_path / "scenario.yaml").write_text("brief: brief.yaml\n")
    assert load_scenario(tmp_path / "scenario.yaml").brief == {"product": "rings", "language": "en"}
    (tmp_path / "missing.yaml").write_text("brief: nowhere.yaml\n")
    with pytest.raises(ScenarioError, match="brief"):
        load_scenario(tmp_path / "missing.yaml")


def test_cli_rejects_a_bad_scenario_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"variants": ["a", "b"], "traffic": {"hours": -2}}))
    result = CliRunner().invoke(app, ["sim", "run", "--scenario", str(path), "--quiet"])
    assert result.exit_code == 2
    assert "traffic.hours" in result.output


# ---------------------------------------------------------------- fast mode


def test_fast_mode_is_deterministic_and_thompson_beats_uniform() -> None:
    arms = [0.05, 0.045, 0.04, 0.03]
    first = simulate(arms, policy="ts", horizon=50_000, n_updates=50, n_runs=40, seed=3)
    again = simulate(arms, policy="ts", horizon=50_000, n_updates=50, n_runs=40, seed=3)
    assert np.array_equal(first.run.clicks, again.run.clicks)
    uniform = simulate(arms, policy="uniform", horizon=50_000, n_updates=50, n_runs=40, seed=3)
    assert uniform.summary()["mean_regret"] == pytest.approx(50_000 * (0.05 - 0.04125))
    assert first.summary()["mean_regret"] < 0.5 * uniform.summary()["mean_regret"]
    for policy in ("ucb1", "egreedy"):
        other = simulate(arms, policy=policy, horizon=50_000, n_updates=50, n_runs=10, seed=3)
        assert 0 < other.summary()["mean_regret"] < uniform.summary()["mean_regret"]
    rows = pl.DataFrame(first.rows())
    assert rows.height == 40 and set(rows.columns) >= {"clicks", "regret", "best_arm_share"}


def test_fast_mode_handles_ragged_problems_and_records_history() -> None:
    ctr = np.array([[0.01, 0.03, np.nan], [0.02, 0.02, 0.05]])
    run = simulate_batched(ctr, [1000, 3000], policy="ts", n_updates=10, rng=1, record_history=True)
    assert np.allclose(run.impressions.sum(axis=1), [1000, 3000])
    assert run.impressions[0, 2] == 0
    assert run.share_history.shape == (10, 2, 3)
    assert np.allclose(run.share_history.sum(axis=2), 1)
    assert np.all(np.diff(run.regret_history, axis=1) >= -1e-9)
    with pytest.raises(SimError, match="policy"):
        simulate_batched(ctr, [1000, 3000], policy="greedy")
    with pytest.raises(SimError, match="horizons"):
        simulate_batched(ctr, [1000], policy="ts")


def test_fast_mode_runs_the_engines_policy_objects() -> None:
    # Replay adds the two that need more than counts: a cross-fitted prior and a text scorer.
    assert set(POLICIES) <= set(REPLAY_POLICIES)
    assert set(REPLAY_POLICIES) - set(POLICIES) == {"ts_eb", "ts_text", "ts_scaled"}
    assert isinstance(make_policy("egreedy", epsilon=0.3), EpsilonGreedy)
    assert make_policy("ts", n_draws=64).n_draws == 64
    ctr = np.array([[0.02, 0.03, np.nan], [0.04, 0.01, 0.05]])
    by_name = simulate_batched(ctr, [5000, 8000], policy="egreedy", epsilon=0.2, rng=4)
    by_object = simulate_batched(ctr, [5000, 8000], policy=EpsilonGreedy(epsilon=0.2), rng=4)
    assert np.array_equal(by_name.impressions, by_object.impressions)
    with pytest.raises(SimError, match="epsilon"):
        simulate_batched(ctr, [5000, 8000], policy="egreedy", epsilon=2.0)
    with pytest.raises(SimError, match="Thompson"):
        simulate_batched(ctr, [5000, 8000], policy="ucb1", prior_alpha=1.0, prior_beta=9.0)


def test_fast_mode_thompson_sampling_includes_the_practically_tied_rule() -> None:
    # three arms within 0.5 % of each other: the engine's policy commits to the leader once
    # the tie is established; classic probability matching keeps splitting the traffic
    ctr = np.tile([0.05, 0.0497, 0.0495], (60, 1))
    horizons = np.full(60, 1_000_000)
    engine_ts = simulate_batched(ctr, horizons, policy="ts", n_updates=20, rng=0,
                                 record_history=True)  # fmt: skip
    classic = simulate_batched(
        ctr, horizons, policy=ThompsonSampling(n_draws=128, loss_threshold=0.0), n_updates=20,
        rng=0, record_history=True,
    )  # fmt: skip
    leader_share = engine_ts.share_history[-5:].max(axis=2).mean()
    assert leader_share > 0.9
    assert leader_share > classic.share_history[-5:].max(axis=2).mean() + 0.15


# ---------------------------------------------------------------- replay


def _synthetic_tests(path: Path) -> None:
    pl.DataFrame(
        {
            "test_id": ["a", "a", "b", "b", "b", "b", "solo"],
            "headline": ["a1", "a2", "b1", "b2", "b3", "b-unshown", "s1"],
            "impressions": [1000, 1000, 500, 1500, 1000, 0, 800],
            "clicks": [10, 30, 5, 30, 40, 0, 8],
            "lede": ["x"] * 7,
        }
    ).write_parquet(path)


def test_replay_reproduces_hand_computed_oracle_and_uniform(tmp_path: Path) -> None:
    path = tmp_path / "tests.parquet"
    _synthetic_tests(path)
    result = replay(path, policies=["ts", "uniform", "ucb1", "egreedy"], n_updates=20, seed=4)
    summary = result.summary
    # test a: CTRs 1 % and 3 % over 2,000 impressions; test b: 1 %, 2 %, 4 % over 3,000.
    # The zero-impression row and the one-arm test are not bandit problems.
    assert summary["tests"] == 2 and summary["seed"] == 4
    assert summary["oracle_clicks"] == pytest.approx(2000 * 0.03 + 3000 * 0.04)
    uniform = summary["policies"]["uniform"]
    assert uniform["clicks"] == pytest.approx(2000 * 0.02 + 3000 * 0.07 / 3)
    assert uniform["regret"] == pytest.approx(180 - 110)
    assert uniform["regret_reduction_vs_uniform"] == 0
    for name in ("ts", "ucb1", "egreedy"):
        row = summary["policies"][name]
        assert row["clicks"] + row["regret"] == pytest.approx(180)
        assert row["regret_reduction_vs_uniform"] == pytest.approx(1 - row["regret"] / 70)
    assert summary["policies"]["ts"]["regret_reduction_vs_uniform"] > 0.3
    again = replay(path, policies=["ts"], n_updates=20, seed=4)
    assert again.summary["policies"]["ts"]["clicks"] == summary["policies"]["ts"]["clicks"]


def test_replay_cli_writes_json_and_per_test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "tests.parquet"
    _synthetic_tests(path)
    out = tmp_path / "out" / "replay.json"
    result = CliRunner().invoke(
        app,
        ["sim", "replay", str(path), "--policies", "ts,uniform", "--updates", "10",
         "--seed", "2", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert set(payload["policies"]) == {"ts", "uniform"}
    assert payload["tests"] == 2 and payload["seed"] == 2 and payload["updates"] == 10
    assert set(payload["policies"]["ts"]) >= {"clicks", "regret", "regret_reduction_vs_uniform"}
    rows = pl.read_parquet(out.with_name("replay.tests.parquet"))
    assert rows.height == 4 and set(rows["policy"]) == {"ts", "uniform"}
    assert rows.filter(pl.col("policy") == "uniform")["clicks"].sum() == pytest.approx(110)


def test_cross_fitted_prior_never_learns_from_the_test_it_is_for() -> None:
    rng = np.random.default_rng(0)
    ctr = rng.beta(20, 980, size=(100, 3))
    impressions = np.full((100, 3), 5_000.0)
    problems = ReplayProblems(tuple(map(str, range(100))), ctr, np.full(100, 15_000),
                              np.full(100, 3), impressions)  # fmt: skip
    alpha, beta = cross_fitted_prior(problems, seed=1)
    assert np.allclose(alpha / (alpha + beta), 0.02, atol=0.002)
    changed = ctr.copy()
    changed[7] = [0.4, 0.5, 0.6]  # test 7's own arms: its prior must not move
    other = ReplayProblems(problems.test_ids, changed, problems.horizons, problems.n_arms,
                           impressions)  # fmt: skip
    alpha_changed, beta_changed = cross_fitted_prior(other, seed=1)
    assert (alpha_changed[7], beta_changed[7]) == (alpha[7], beta[7])
    assert not np.allclose(alpha_changed, alpha)  # ... while the other fold's priors do
    with pytest.raises(ReplayError, match="n_folds"):
        cross_fitted_prior(problems, n_folds=1)


def test_replay_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="not found"):
        replay(tmp_path / "nope.parquet")
    missing = tmp_path / "missing.parquet"
    pl.DataFrame({"test_id": ["a"], "impressions": [10]}).write_parquet(missing)
    with pytest.raises(ReplayError, match="clicks"):
        replay(missing)
    text = tmp_path / "text.parquet"
    text.write_text("test_id,headline\n")
    with pytest.raises(ReplayError, match="Parquet"):
        replay(text)
    good = tmp_path / "good.parquet"
    _synthetic_tests(good)
    with pytest.raises(ReplayError, match="policy"):
        replay(good, policies=["thompson"])
    result = CliRunner().invoke(app, ["sim", "replay", str(missing)])
    assert result.exit_code == 2 and "clicks" in result.output


def test_replay_on_real_tests_thompson_recovers_half_of_uniform_regret(upworthy_path: Path) -> None:
    # The first 300 tests keep the default run fast; the slow test below covers them all.
    result = replay(upworthy_path, policies=["ts", "uniform"], n_updates=100, seed=0,
                    n_draws=64, max_tests=300)  # fmt: skip
    assert result.summary["tests"] == 300
    assert result.summary["policies"]["ts"]["regret_reduction_vs_uniform"] >= 0.5


@pytest.mark.slow
def test_replay_on_all_real_tests(upworthy_path: Path) -> None:
    result = replay(upworthy_path, policies=["ts", "ts_eb", "uniform"], n_updates=100, seed=0)
    policies = result.summary["policies"]
    assert result.summary["tests"] > 1000
    assert policies["ts"]["regret_reduction_vs_uniform"] >= 0.5
    assert policies["ts_eb"]["regret_reduction_vs_uniform"] >= 0.5
