"""Closed loop in the simulator: does retraining on winners make new candidates better?

The same scenario (``examples/scenario_retraining.yaml``) and seed run twice through the real
engine (``sim.run_scenario``): once with retraining rounds (``optimizer.retrain`` fine-tunes
the language model on the campaign's winners and confident pairs, gates it, promotes it and
switches the engine's generator pool to it), once without. After every round — and at round
0, before any — the simulator asks the pool for a fresh batch of candidates and scores them
with the hidden audience model; nothing else differs between the two arms.

Reported per round: mean and max true CTR of the new candidates (segment mix), their
diversity (share of distinct character trigrams, the simulator's measure; 1 = no repeats),
and the round's outcome (promoted / rejected / skipped). The claim checked: with retraining
the mean true CTR rises round over round and after the last round is at least 15 % higher
(relative) than without, while diversity stays above ``DIVERSITY_FLOOR``.

Run: ``python -m bench.closed_loop [--seeds 11 12] [--out bench/results]``; the plot goes
to ``docs/closed_loop.png``. CPU budget: LoRA, a few steps per round, small pools.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "examples" / "scenario_retraining.yaml"
#: Diversity (distinct character trigrams of a batch of new candidates) must stay above this.
DIVERSITY_FLOOR = 0.5


#: Probability-best a variant needs to count as a winner in this experiment (see --help).
WINNER_THRESHOLD = 0.9


def experiment_config() -> Any:
    """Retraining settings sized for 2 shared CPU cores and a 135M model."""
    from generators.training import TrainingConfig
    from optimizer.retrain import RetrainConfig

    return RetrainConfig(
        winner_threshold=WINNER_THRESHOLD,
        min_impressions=300,
        min_pair_impressions=300,
        max_pairs_per_campaign=12,
        holdout_fraction=0.25,
        gate_candidates=6,
        gate_briefs=1,
        training=TrainingConfig(
            sft_steps=12,
            dpo_steps=4,
            batch_size=2,
            learning_rate=1e-3,
            lora_r=16,
            lora_alpha=32,
            max_length=288,
            threads=1,
            evaluate=False,
        ),
    )


def run_arm(scenario: Any, *, retrain: bool, seed: int, workdir: Path) -> dict[str, Any]:
    """One simulated campaign with retraining on or off; the per-round candidate rows."""
    from optimizer.retrain import make_retrain_hook
    from sim import run_scenario

    settings = scenario.retraining.model_copy(
        update={"enabled": retrain, "measure_candidates": True}
    )
    arm = scenario.model_copy(update={"retraining": settings})
    started = time.perf_counter()
    db_path = workdir / f"{'on' if retrain else 'off'}-{seed}.duckdb"
    hook = make_retrain_hook(experiment_config()) if retrain else None
    result = run_scenario(arm, seed=seed, db_path=db_path, on_retrain=hook)
    rows = []
    for row in result.rounds:
        detail = row.get("detail") or {}
        rows.append(
            {
                "seed": seed,
                "retraining": "on" if retrain else "off",
                "round": row["round"],
                "mean_true_ctr": row["mean_true_ctr"],
                "max_true_ctr": row["max_true_ctr"],
                "distinct_trigrams": row["distinct_trigrams"],
                "n_candidates": row["n_candidates"],
                "model_version": row.get("model_version"),
                "outcome": detail.get("outcome", ""),
                "round_seconds": detail.get("seconds", 0.0),
            }
        )
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "clicks": result.summary.get("clicks"),
        "rounds_detail": result.rounds,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Mean true CTR and diversity of new candidates per round, on vs off (small PNG)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.0), dpi=100)
    for arm, colour in (("off", "#888888"), ("on", "#1f77b4")):
        arm_rows = [r for r in rows if r["retraining"] == arm and r["mean_true_ctr"] is not None]
        rounds = sorted({r["round"] for r in arm_rows})
        ctr = [
            100 * np.mean([r["mean_true_ctr"] for r in arm_rows if r["round"] == k]) for k in rounds
        ]
        div = [
            np.mean([r["distinct_trigrams"] for r in arm_rows if r["round"] == k]) for k in rounds
        ]
        label = f"retraining {arm}"
        left.plot(rounds, ctr, marker="o", color=colour, label=label)
        right.plot(rounds, div, marker="o", color=colour, label=label)
    left.set_xlabel("retraining round (0 = before any)")
    left.set_ylabel("true CTR of new ads (%)")
    left.set_title("mean true CTR, new candidates", fontsize=9)
    right.set_title("diversity, new candidates", fontsize=9)
    right.set_xlabel("retraining round")
    right.set_ylabel("distinct trigrams")
    right.axhline(DIVERSITY_FLOOR, color="#d62728", linestyle="--", linewidth=1, label="floor")
    right.set_ylim(0, 1.05)
    for axis in (left, right):
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Relative lift of the on arm over the off arm at the last round, and the checks."""
    import numpy as np

    last = max(r["round"] for r in rows)

    def mean(arm: str, k: int, key: str = "mean_true_ctr") -> float:
        values = [
            r[key]
            for r in rows
            if r["retraining"] == arm and r["round"] == k and r[key] is not None
        ]
        return float(np.mean(values)) if values else float("nan")

    on = [mean("on", k) for k in range(last + 1)]
    off = [mean("off", k) for k in range(last + 1)]
    lift = on[last] / off[last] - 1.0
    diversity_on = [mean("on", k, "distinct_trigrams") for k in range(last + 1)]
    return {
        "rounds": last,
        "mean_true_ctr_on": on,
        "mean_true_ctr_off": off,
        "relative_lift_last_round": lift,
        "rises_round_over_round": all(b >= a for a, b in zip(on, on[1:], strict=False)),
        "lift_at_least_15pct": lift >= 0.15,
        "diversity_on": diversity_on,
        "diversity_floor": DIVERSITY_FLOOR,
        "diversity_above_floor": min(diversity_on) >= DIVERSITY_FLOOR,
    }


def main(
    out: Path = Path("bench/results"),
    quick: bool = False,
    seeds: tuple[int, ...] = (11,),
    arms: tuple[str, ...] = ("off", "on"),
) -> dict[str, Any]:
    """Run both arms for each seed; write JSON, markdown and ``docs/closed_loop.png``."""
    from bench._common import write_results
    from sim import load_scenario

    scenario = load_scenario(SCENARIO)
    if quick:
        scenario = scenario.model_copy(
            update={
                "traffic": scenario.traffic.model_copy(update={"hours": 4}),
                "retraining": scenario.retraining.model_copy(update={"every_hours": 1}),
                "lifecycle": scenario.lifecycle.model_copy(
                    update={"retire_refill_every_hours": None}
                ),
            }
        )
    rows: list[dict[str, Any]] = []
    timings = {}
    with tempfile.TemporaryDirectory(prefix="adloop-closed-loop-") as tmp:
        for seed in seeds:
            for arm in arms:
                outcome = run_arm(scenario, retrain=arm == "on", seed=seed, workdir=Path(tmp))
                rows.extend(outcome["rows"])
                timings[f"{arm}-{seed}"] = round(outcome["seconds"], 1)
                print(json.dumps(outcome["rows"], default=str), flush=True)
    result = {"rows": rows, "timings_s": timings, "seeds": list(seeds)}
    if set(arms) == {"off", "on"}:
        result["summary"] = summarise(rows)
        plot(rows, ROOT / "docs" / "closed_loop.png")
    notes = json.dumps(result.get("summary", {}), default=str)
    write_results("closed_loop", rows, out, f"summary: {notes}\n\ntimings (s): {timings}")
    (out / "closed_loop_detail.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def combine(parts: list[Path], out: Path) -> dict[str, Any]:
    """Merge arms run as separate processes (``--arms off`` / ``--arms on``) into one result."""
    from bench._common import write_results

    rows: list[dict[str, Any]] = []
    timings: dict[str, Any] = {}
    for part in parts:
        detail = json.loads((part / "closed_loop_detail.json").read_text())
        rows.extend(detail["rows"])
        timings.update(detail["timings_s"])
    result = {"rows": rows, "timings_s": timings, "summary": summarise(rows)}
    plot(rows, ROOT / "docs" / "closed_loop.png")
    notes = json.dumps(result["summary"], default=str)
    write_results("closed_loop", rows, out, f"summary: {notes}\n\ntimings (s): {timings}")
    (out / "closed_loop_detail.json").write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combine", type=Path, nargs="+", help="merge results of these folders")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[11])
    parser.add_argument("--arms", nargs="+", default=["off", "on"])
    parser.add_argument("--winner-threshold", type=float, default=WINNER_THRESHOLD)
    args = parser.parse_args()
    WINNER_THRESHOLD = args.winner_threshold
    if args.combine:
        combine(args.combine, args.out)
    else:
        main(args.out, args.quick, tuple(args.seeds), tuple(args.arms))
