"""Engine mode: scenarios played through the real optimizer.Engine and a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from adloop.cli import app
from adloop.sim import ScenarioError, load_scenario, simulate
from adloop.sim.engine_run import diversity, run_scenario

# One segment that likes numbers and exclamation marks: three texts with CTRs far apart, so a
# bandit has something to learn within a small run.
AGREEMENT = {
    "name": "agreement",
    "variants": ["Gold rings", "Gold rings 20%", "Gold rings 20%!"],
    "world": {
        "seed": 0,
        "base_ctr": 0.015,
        "idiosyncratic_sd": 0.05,
        "segments": [
            {"name": "all", "share": 1.0, "ctr_weights": {"has_number": 0.7, "exclamation": 0.6}}
        ],
    },
    "traffic": {"hours": 20, "impressions_per_hour": 500, "daily_cycle": 0.0},
    "refresh": {"every_hours": 1},
    "lifecycle": {"retire_refill_every_hours": None, "declare_winner": False},
    "policy": {"name": "ts", "n_draws": 1000},
}


def test_fast_mode_and_engine_mode_agree_on_clicks() -> None:
    scenario = load_scenario(AGREEMENT)
    world = scenario.build_world()
    arm_ctr = world.true_rates(scenario.variants).ctr[:, 0]
    engine_clicks, engine_impressions = [], []
    for seed in (0, 1):
        # Same world (world.seed fixes the scorer), different traffic and engine draws.
        summary = run_scenario(scenario, seed=seed).summary
        assert summary["seed"] == seed
        engine_clicks.append(summary["clicks"])
        engine_impressions.append(summary["impressions"])
    horizon = int(np.mean(engine_impressions))
    fast = simulate(arm_ctr, policy="ts", horizon=horizon, n_updates=20, n_runs=400, seed=0)
    uniform_clicks = horizon * float(arm_ctr.mean())
    fast_mean = float(fast.run.clicks.mean())
    # Engine clicks are realised draws: the spread is the policy's spread plus binomial noise.
    spread = float(np.sqrt(fast.run.clicks.var() + fast_mean))
    assert fast_mean > uniform_clicks + 4 * spread / np.sqrt(2)  # the check has power
    for clicks, impressions in zip(engine_clicks, engine_impressions, strict=True):
        scaled = clicks * horizon / impressions
        assert abs(scaled - fast_mean) < 3.5 * spread, (scaled, fast_mean, spread)
    mean_engine = float(np.mean([c * horizon / i for c, i in
                                 zip(engine_clicks, engine_impressions, strict=True)]))  # fmt: skip
    assert abs(mean_engine - fast_mean) < 3.5 * spread / np.sqrt(2)
    assert abs(mean_engine - fast_mean) < abs(mean_engine - uniform_clicks)


def test_engine_run_writes_report_and_keeps_the_store(tmp_path: Path) -> None:
    scenario_path = tmp_path / "scenario.yaml"
    data = {
        **AGREEMENT,
        "traffic": {"hours": 6, "impressions_per_hour": 300, "daily_cycle": 0.3},
        "invalid_traffic": {"duplicate_rate": 0.2, "out_of_order_rate": 0.2},
        "conversions": {"delay_mean_hours": 1.0, "attribution_window_hours": 2.0},
        "lifecycle": {"retire_refill_every_hours": None, "declare_winner": True},
    }
    scenario_path.write_text(yaml.safe_dump(data))
    out, db, summary_file = tmp_path / "report", tmp_path / "kept.duckdb", tmp_path / "s.json"
    result = CliRunner().invoke(
        app,
        ["sim", "run", "--scenario", str(scenario_path), "--out", str(out), "--seed", "3",
         "--json", str(summary_file), "--db", str(db), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("summary.json", "report.html", "cumulative_regret.png", "traffic_share.png",
                 "posterior_intervals.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(summary_file.read_text())
    assert summary["seed"] == 3 and db.exists()
    hourly = pl.read_parquet(out / "hourly.parquet")
    assert hourly["impressions"].sum() == summary["impressions"]
    assert hourly["clicks"].sum() == summary["clicks"]
    events = summary["events"]
    assert events["duplicates_sent"] > 0 and events["out_of_order_clicks_sent"] > 0
    # The store deduplicates every re-delivery and keeps out-of-order clicks.
    assert events["duplicates"] == events["duplicates_sent"] and events["rejected"] == 0
    assert events["accepted"] == summary["clicks"] + summary["conversions"]
    assert summary["data_quality"]["duplicate_deliveries"] == events["duplicates_sent"]
    assert summary["data_quality"]["clicks_exceed_impressions"] == []
    counted = {v["variant_id"]: v for v in summary["variants"]}
    assert sum(v["impressions"] for v in counted.values()) == summary["impressions"]
    assert sum(v["clicks"] for v in counted.values()) == summary["clicks"]
    assert 0 <= summary["regret"] <= summary["oracle_clicks"]


def test_generated_campaign_refills_and_calls_the_retraining_hook(tmp_path: Path) -> None:
    calls: list[int] = []

    def on_retrain(engine: Any, round_index: int) -> dict[str, Any]:
        calls.append(round_index)
        assert engine.campaigns()  # the hook sees the live engine and its campaign
        return {"note": f"round {round_index}"}

    scenario = load_scenario(
        {
            "name": "generated",
            "brief": {"product": "made-to-measure rings", "brand": "Aurelle", "language": "en"},
            "traffic": {"hours": 6, "impressions_per_hour": 300},
            "lifecycle": {"retire_refill_every_hours": 2, "declare_winner": False},
            "generators": {"names": ["template", "recombine"], "pool_size": 4},
            "retraining": {"enabled": True, "every_hours": 2},
        }
    )
    result = run_scenario(scenario, seed=2, out=tmp_path, on_retrain=on_retrain)
    assert calls == [1, 2]
    rounds = result.summary["retraining_rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["retrained"] for r in rounds] == [False, True, True]
    assert all(r["n_candidates"] > 0 and 0 < r["mean_true_ctr"] < 0.5 for r in rounds)
    assert rounds[1]["detail"] == {"note": "round 1"}
    assert (tmp_path / "retraining_rounds.png").exists()
    assert [entry["hour"] for entry in result.summary["lifecycle"]] == [2, 4]
    generators = {v["generator"] for v in result.variants}
    assert generators <= {"template", "recombine"} and "template" in generators
    # The control arm of an on/off comparison: rounds are measured, the hook never runs.
    control = scenario.model_copy(
        update={"retraining": scenario.retraining.model_copy(
            update={"enabled": False, "measure_candidates": True})}
    )  # fmt: skip
    off = run_scenario(control, seed=2, on_retrain=on_retrain)
    assert calls == [1, 2]
    off_rounds = off.summary["retraining_rounds"]
    assert [r["retrained"] for r in off_rounds] == [False, False, False]
    assert off_rounds[0]["mean_true_ctr"] == rounds[0]["mean_true_ctr"]


def test_probe_batch_is_measured_and_never_served() -> None:
    settings = {
        "name": "probe",
        "brief": {"product": "made-to-measure rings", "brand": "Aurelle", "language": "en"},
        "traffic": {"hours": 4, "impressions_per_hour": 300},
        "lifecycle": {"retire_refill_every_hours": 2, "declare_winner": False},
        "generators": {"names": ["template"], "pool_size": 3},
        "retraining": {"enabled": False, "every_hours": 2, "measure_candidates": True},
    }
    small = run_scenario(load_scenario(settings), seed=4)
    settings["retraining"]["probe_candidates"] = 6
    large = run_scenario(load_scenario(settings), seed=4)
    assert [r["n_candidates"] for r in small.rounds] == [3, 3]
    assert [r["n_candidates"] for r in large.rounds] == [6, 6]
    assert all(r["sem_true_ctr"] > 0 and 0 < r["distinct_trigrams"] <= 1 for r in large.rounds)
    # Measurement only: the campaign, its traffic and its clicks are the same either way.
    assert large.summary["clicks"] == small.summary["clicks"]
    assert [v["text"] for v in large.variants] == [v["text"] for v in small.variants]


def test_engine_mode_compares_policies_through_the_same_engine() -> None:
    results = {}
    for name in ("ts", "uniform", "ucb1"):
        scenario = load_scenario({**AGREEMENT, "policy": {"name": name, "n_draws": 1000}})
        results[name] = run_scenario(scenario, seed=3).summary
    shares = [v["impressions"] / results["uniform"]["impressions"]
              for v in results["uniform"]["variants"]]  # fmt: skip
    assert max(shares) - min(shares) < 0.05  # an equal split, up to sampling noise
    assert results["ts"]["expected_clicks"] > results["uniform"]["expected_clicks"] * 1.1
    assert results["ucb1"]["expected_clicks"] > results["uniform"]["expected_clicks"]


def test_engine_mode_rejects_an_unknown_policy_naming_the_key() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario({**AGREEMENT, "policy": {"name": "greedy"}})
    assert caught.value.key_path == "policy.name"


def test_engine_runs_are_reproducible_per_seed() -> None:
    scenario = load_scenario(
        {**AGREEMENT, "traffic": {"hours": 3, "impressions_per_hour": 300},
         "invalid_traffic": {"duplicate_rate": 0.1, "out_of_order_rate": 0.1}}
    )  # fmt: skip
    keys = ("impressions", "clicks", "conversions", "expected_clicks", "events")
    first, again = run_scenario(scenario, seed=4), run_scenario(scenario, seed=4)
    assert {k: first.summary[k] for k in keys} == {k: again.summary[k] for k in keys}
    assert first.hourly.equals(again.hourly)
    other = run_scenario(scenario, seed=5)
    assert other.hourly["clicks"].to_list() != first.hourly["clicks"].to_list()


def test_simulated_runs_have_no_wall_clock_generation_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The serving engine stops generating after 60 s of wall time; in the simulator that cap
    would make the variants a refill gets, and so the run, depend on how busy the machine is.
    The simulator's engine has none unless the caller asks for one."""
    from adloop import optimizer

    seen: list[Any] = []

    class Recording(optimizer.Engine):
        def __init__(self, *args: Any, config: Any, **kwargs: Any) -> None:
            seen.append(config)
            super().__init__(*args, config=config, **kwargs)

    monkeypatch.setattr(optimizer, "Engine", Recording)
    scenario = load_scenario({**AGREEMENT, "traffic": {"hours": 1, "impressions_per_hour": 100}})
    run_scenario(scenario, seed=1)
    run_scenario(scenario, seed=1, engine_config={"generation_time_budget": 5.0})
    assert optimizer.EngineConfig().generation_time_budget == 60.0
    assert [c.generation_time_budget for c in seen] == [None, 5.0]


def test_diversity_reads_the_same_whatever_the_probe_size() -> None:
    texts = ["Bespoke rings, made to fit", "Shop fine gold today", "Rings made to measure"]
    assert diversity(texts, 3) == pytest.approx(diversity(texts * 4, 3))
    # A pool that repeats itself scores lower; a short last slice is dropped when others exist.
    assert diversity(["Bespoke rings"] * 3, 3) < diversity(texts, 3)
    assert diversity([*texts, "x"], 3) == pytest.approx(diversity(texts, 3))
    assert diversity([], 3) == 0.0
