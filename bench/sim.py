"""Simulator benchmark: fast-mode and engine-mode throughput, and replay of real A/B tests.

* **fast mode** — simulated impressions per second of the vectorized policy-only simulator,
  10 arms, many seeded runs at once, batched posterior updates (target: >= 10 M/s for
  Thompson sampling on a 2-core machine);
* **engine mode** — impressions per second of a scenario played through the real
  ``optimizer.Engine`` with a DuckDB store on a simulated clock (choices, impression and
  decision logging, click and conversion events, hourly refreshes);
* **replay** — every policy on the real Upworthy tests (when the file is present): clicks,
  regret and regret reduction against an equal split, 100 updates per test.

Run with ``python -m bench sim [--quick]`` or ``adloop bench sim``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from adloop.bandits import POLICIES
from bench._common import max_rss_mb, write_results

ROOT = Path(__file__).resolve().parent.parent
UPWORTHY = ROOT.parent / "shared" / "data" / "upworthy_dev.parquet"
ARMS_10 = [0.05, 0.049, 0.049, 0.048, 0.047, 0.046, 0.045, 0.045, 0.044, 0.04]


def _fast_rows(quick: bool) -> list[dict[str, Any]]:
    from adloop.sim import simulate

    rows = []
    n_runs = 20 if quick else 100
    horizon = 200_000 if quick else 1_000_000
    simulate(ARMS_10, policy="ts", horizon=10_000, n_updates=10, n_runs=4, seed=0)  # warm-up
    for policy in POLICIES:
        for batch in (1_000, 10_000):
            n_updates = horizon // batch
            start = time.perf_counter()
            result = simulate(
                ARMS_10, policy=policy, horizon=horizon, n_updates=n_updates, n_runs=n_runs, seed=1
            )
            seconds = time.perf_counter() - start
            impressions = horizon * n_runs
            rows.append(
                {
                    "name": f"fast {policy}, 10 arms, batch {batch:,}",
                    "system": "adloop sim (fast mode)",
                    "impressions": impressions,
                    "seconds": seconds,
                    "impressions_per_s": impressions / seconds,
                    "mean_regret": result.summary()["mean_regret"],
                }
            )
    return rows


def _engine_rows(quick: bool) -> list[dict[str, Any]]:
    from adloop.sim import load_scenario
    from adloop.sim.engine_run import run_scenario

    hours, per_hour = (6, 2_000) if quick else (24, 10_000)
    scenario = load_scenario(
        {
            "name": "bench",
            "variants": [
                "Bespoke engagement rings, made to measure in Paris",
                "Shop 18k gold rings today — complimentary engraving!",
                "Timeless elegance, handcrafted for you",
                "Looking for a ring as unique as your story?",
                "Aurelle fine jewellery: book your private design consultation",
                "New season: chic gold necklaces",
            ],
            "traffic": {"hours": hours, "impressions_per_hour": per_hour, "daily_cycle": 0.3},
            "invalid_traffic": {"duplicate_rate": 0.01, "out_of_order_rate": 0.02},
            "refresh": {"every_hours": 1},
            "lifecycle": {"retire_refill_every_hours": None, "declare_winner": True},
        }
    )
    start = time.perf_counter()
    summary = run_scenario(scenario, seed=1).summary
    seconds = time.perf_counter() - start
    events = summary["events"]["accepted"] + summary["events"]["duplicates"]
    return [
        {
            "name": f"engine mode, 6 variants, 3 segments, {hours} h x {per_hour:,}/h",
            "system": "adloop sim (engine + DuckDB)",
            "impressions": summary["impressions"],
            "seconds": seconds,
            "impressions_per_s": summary["impressions"] / seconds,
            "click_and_conversion_events": events,
            "refreshes": hours,
            "peak_rss_mb": max_rss_mb(),
        }
    ]


def _replay_rows(quick: bool) -> list[dict[str, Any]]:
    from adloop.sim import replay

    if not UPWORTHY.exists():
        return []
    max_tests = 300 if quick else None
    start = time.perf_counter()
    result = replay(UPWORTHY, n_updates=100, seed=0, max_tests=max_tests)
    seconds = time.perf_counter() - start
    summary = result.summary
    rows = []
    for name, row in summary["policies"].items():
        rows.append(
            {
                "name": f"replay {summary['tests']:,} Upworthy tests, 100 updates",
                "system": f"policy {name}",
                "impressions": summary["impressions"],
                "seconds": row["seconds"],
                "clicks": row["clicks"],
                "oracle_clicks": summary["oracle_clicks"],
                "regret": row["regret"],
                "regret_reduction_vs_uniform": row["regret_reduction_vs_uniform"],
            }
        )
    rows.append(
        {
            "name": "replay total wall time",
            "system": "all policies",
            "seconds": seconds,
            "impressions": summary["impressions"] * len(summary["policies"]),
        }
    )
    return rows


def main(out: Path, quick: bool) -> None:
    """Measure fast mode, engine mode and replay; write ``sim.json`` and ``sim.md``."""
    np.seterr(all="ignore")
    rows = _fast_rows(quick) + _engine_rows(quick) + _replay_rows(quick)
    notes = (
        "Fast mode: expected clicks per allocation, policy weights from the engine's own "
        "policy objects (adloop.bandits.POLICIES, batch_weights); impressions/s counts "
        "simulated impressions over all runs. Engine mode: every impression is a real "
        "Engine.choose_many decision logged to DuckDB with its impression; clicks and "
        "conversions go through Engine.record; the snapshot is refreshed every simulated hour. "
        "Replay: ts_eb = Thompson sampling with a cross-fitted empirical-Bayes Beta prior "
        "from the other folds of the tests."
    )
    if quick:
        notes += " (--quick: smaller sizes; replay on the first 300 tests.)"
    write_results("sim", rows, out, notes)
