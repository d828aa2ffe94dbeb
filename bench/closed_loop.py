"""Closed loop in the simulator: does retraining on winners make new candidates better?

The same scenario (``examples/scenario_retraining.yaml``) and seed run twice through the real
engine (``sim.run_scenario``, as ``adloop sim run`` does): once with retraining rounds
(``optimizer.retrain`` fine-tunes the language model on the campaign's winners and confident
pairs, with ``rerank_oversample`` above 1 also fits a copy scorer on the proven variants'
results that the new version's generator reranks its samples with, gates the version, promotes
it and switches the engine's generator pool to it), once without. The rounds' settings are the
scenario's ``retraining.config``; flags override them. After every round — and at round 0,
before any — the simulator asks the pool for a probe of fresh candidates (24, set in the
scenario; measurement only, never served) and scores them with the hidden audience model;
nothing else differs between the two arms.

Reported per round: mean (with its standard error over the probe) and max true CTR of the
new candidates (segment mix), their diversity (share of distinct character trigrams in
pool-sized slices of the probe, the simulator's measure; 1 = no repeats), the training data
(winners, pairs) and the round's outcome (promoted / rejected / skipped). The claim checked:
with retraining the mean true CTR rises round over round and after the last round is at
least 15 % higher (relative) than without, while diversity stays above ``DIVERSITY_FLOOR`` in
every seed and retraining round (round 0, the base model's probe, is the same in both arms).
The summary also gives the last-round lift per seed: seeds differ in their hidden audience,
so the spread between them is the honest error bar.

Run: ``python -m bench.closed_loop [--seeds 11 12] [--scenario FILE] [--out bench/results]``
(``examples/scenario_retraining_busy.yaml`` is the same campaign with 10,000 impressions an
hour instead of 3,000, so each round has more confident pairs;
``examples/scenario_retraining_refresh.yaml`` also replaces losers every 4 hours, so the market
tests about three times as many texts a round, and ships a copy scorer with each version);
the plot goes to ``--plot`` (default ``docs/closed_loop.png``). Arms can run as separate
processes (``--arms on`` / ``--arms off``) and be merged with ``--combine DIR ...``. CPU
budget: LoRA, a few steps per round, small pools.
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
#: Where the plot goes (``--plot``).
PLOT = ROOT / "docs" / "closed_loop.png"
#: Diversity (distinct character trigrams of a batch of new candidates) must stay above this.
DIVERSITY_FLOOR = 0.5


#: Probe size per round (``--probe``); None: the scenario's ``probe_candidates``.
PROBE: int | None = None
#: Settings given as flags, over the scenario's ``retraining.config`` (RetrainConfig field ->
#: value; TRAINING_FLAGS go under ``training``).
OVERRIDES: dict[str, Any] = {}
TRAINING_FLAGS = ("max_epochs", "dpo_steps", "learning_rate")


def experiment_config(scenario_settings: dict[str, Any] | None = None) -> Any:
    """The scenario's ``retraining.config`` (the library's defaults when it has none), with
    the flags given on the command line (``OVERRIDES``) on top: the settings
    ``adloop sim run`` uses for the same scenario, so either reproduces the other.

    The retraining scenarios in ``examples/`` carry settings sized for 2 shared CPU cores and a
    135M model. Compared with the library defaults: more pairs per campaign (a larger held-out
    set makes the gate's accuracy comparison less of a coin toss, and DPO sees more of the
    market's verdicts), DPO with a small likelihood term on the chosen copy (keeps DPO from
    lowering the likelihood of good copy along with bad; the winners are the chosen side of
    their pairs), a 12-candidate validity check in the gate, and **no SFT phase**. A campaign
    has one winner at a time, and SFT on it, at learning rate 1e-3 or 3e-4, with or without the
    runners-up, taught the model to repeat it: the new versions wrote the same copy again and
    again (distinct-2 0.08 to 0.48 against the current version's 0.91) and the gate refused
    every one, so nothing reached the pool. The gate's thresholds are the library's. DPO makes
    at most two passes over each round's pairs (``--max-epochs``). More pairs and steps per
    round (48 pairs and up to 36 steps instead of 32 and 12) made it worse: the model learnt the
    held-out preferences (accuracy up to 1.0) but wrote the same copy again and again, and the
    gate refused 5 of the 6 rounds that had more than 8 pairs (distinct-2 0.23 to 0.43). With
    ``rerank_oversample`` above 1 a version also ships a copy scorer when it validates, and
    samples that many times the candidates it needs (see :mod:`adloop.generators.scorer`).
    """
    from adloop.optimizer.retrain import RetrainConfig

    settings = dict(scenario_settings or {})
    training = dict(settings.get("training") or {})
    for key, value in OVERRIDES.items():
        if key in TRAINING_FLAGS:
            training[key] = value
        else:
            settings[key] = value
    if training:
        settings["training"] = training
    return RetrainConfig.from_dict(settings)


def run_arm(scenario: Any, *, retrain: bool, seed: int, workdir: Path) -> dict[str, Any]:
    """One simulated campaign with retraining on or off; the per-round candidate rows."""
    from adloop.sim import run_scenario
    from adloop.sim.retraining import make_retrain_hook

    update: dict[str, Any] = {"enabled": retrain, "measure_candidates": True}
    if PROBE is not None:
        update["probe_candidates"] = PROBE
    settings = scenario.retraining.model_copy(update=update)
    arm = scenario.model_copy(update={"retraining": settings})
    started = time.perf_counter()
    db_path = workdir / f"{'on' if retrain else 'off'}-{seed}.duckdb"
    hook = make_retrain_hook(experiment_config(scenario.retraining.config)) if retrain else None
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
                "sem_true_ctr": row.get("sem_true_ctr"),
                "max_true_ctr": row["max_true_ctr"],
                "distinct_trigrams": row["distinct_trigrams"],
                "n_candidates": row["n_candidates"],
                "model_version": row.get("model_version"),
                "outcome": detail.get("outcome", ""),
                "winners": detail.get("winners"),
                "train_pairs": detail.get("train_pairs"),
                "heldout_pairs": detail.get("heldout_pairs"),
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
        # Thin lines: one per seed (each its own hidden audience); the spread is the error bar.
        for seed in sorted({r["seed"] for r in arm_rows}):
            seed_rows = sorted((r for r in arm_rows if r["seed"] == seed), key=lambda r: r["round"])
            seed_rounds = [r["round"] for r in seed_rows]
            thin = {"color": colour, "linewidth": 0.6, "alpha": 0.35}
            left.plot(seed_rounds, [100 * r["mean_true_ctr"] for r in seed_rows], **thin)
            right.plot(seed_rounds, [r["distinct_trigrams"] for r in seed_rows], **thin)
        left.plot(rounds, ctr, marker="o", color=colour, label=f"{label} (mean)")
        right.plot(rounds, div, marker="o", color=colour, label=label)
    left.set_xlabel("retraining round (0 = before any)")
    left.set_ylabel("true CTR of new ads (%)")
    left.set_title("mean true CTR, new candidates (thin: per seed)", fontsize=9)
    right.set_title("diversity, new candidates (thin: per seed)", fontsize=9)
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
    # Per seed: the spread says how much one campaign's result can be trusted.
    per_seed = {}
    for seed in sorted({r["seed"] for r in rows}):
        ctr = {
            r["retraining"]: r["mean_true_ctr"]
            for r in rows
            if r["seed"] == seed and r["round"] == last and r["mean_true_ctr"] is not None
        }
        if {"on", "off"} <= set(ctr):
            per_seed[seed] = ctr["on"] / ctr["off"] - 1.0
    lifts = np.array(list(per_seed.values()))
    # The floor applies to what retraining wrote: round 0 is the base model's probe, the same
    # in both arms (reported apart).
    lowest = min(
        r["distinct_trigrams"] for r in rows if r["retraining"] == "on" and r["round"] >= 1
    )
    return {
        "rounds": last,
        "mean_true_ctr_on": on,
        "mean_true_ctr_off": off,
        "relative_lift_last_round": lift,
        "lift_last_round_per_seed": per_seed,
        "lift_per_seed_min_max": [float(lifts.min()), float(lifts.max())] if len(lifts) else None,
        "lift_per_seed_sem": float(lifts.std(ddof=1) / np.sqrt(len(lifts)))
        if len(lifts) > 1
        else None,
        "rises_round_over_round": all(b >= a for a, b in zip(on, on[1:], strict=False)),
        "lift_at_least_15pct": lift >= 0.15,
        "diversity_on": diversity_on,
        "diversity_on_lowest_seed_round": lowest,
        "diversity_before_retraining": diversity_on[0],
        "diversity_floor": DIVERSITY_FLOOR,
        # Every seed and round, not the mean over seeds: one collapsed model is a failure.
        "diversity_above_floor": lowest >= DIVERSITY_FLOOR,
    }


def main(
    out: Path = Path("bench/results"),
    quick: bool = False,
    seeds: tuple[int, ...] = (11,),
    arms: tuple[str, ...] = ("off", "on"),
) -> dict[str, Any]:
    """Run both arms for each seed; write JSON, markdown and the plot (``PLOT``)."""
    from adloop.sim import load_scenario
    from bench._common import write_results

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
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="adloop-closed-loop-") as tmp:
        for seed in seeds:
            for arm in arms:
                outcome = run_arm(scenario, retrain=arm == "on", seed=seed, workdir=Path(tmp))
                rows.extend(outcome["rows"])
                timings[f"{arm}-{seed}"] = round(outcome["seconds"], 1)
                details[f"{arm}-{seed}"] = [
                    {**(r.get("detail") or {}), "probe_texts": r.get("texts", [])}
                    for r in outcome["rounds_detail"]
                ]
                print(json.dumps(outcome["rows"], default=str), flush=True)
    result = {"rows": rows, "timings_s": timings, "seeds": list(seeds), "rounds_detail": details}
    if set(arms) == {"off", "on"}:
        result["summary"] = summarise(rows)
        plot(rows, PLOT)
    notes = json.dumps(result.get("summary", {}), default=str)
    write_results("closed_loop", rows, out, f"summary: {notes}\n\ntimings (s): {timings}")
    (out / "closed_loop_detail.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def combine(parts: list[Path], out: Path) -> dict[str, Any]:
    """Merge arms run as separate processes (``--arms off`` / ``--arms on``) into one result."""
    from bench._common import write_results

    rows: list[dict[str, Any]] = []
    timings: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for part in parts:
        detail = json.loads((part / "closed_loop_detail.json").read_text())
        rows.extend(detail["rows"])
        timings.update(detail["timings_s"])
        details.update(detail.get("rounds_detail", {}))
    result = {
        "rows": rows,
        "timings_s": timings,
        "summary": summarise(rows),
        "rounds_detail": details,
    }
    plot(rows, PLOT)
    notes = json.dumps(result["summary"], default=str)
    write_results("closed_loop", rows, out, f"summary: {notes}\n\ntimings (s): {timings}")
    (out / "closed_loop_detail.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def cli(argv: list[str] | None = None) -> None:
    """The command line (``adloop bench closed-loop --help``)."""
    global SCENARIO, PROBE, PLOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combine", type=Path, nargs="+", help="merge results of these folders")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[11])
    parser.add_argument("--arms", nargs="+", default=["off", "on"])
    config = parser.add_argument_group(
        "retraining settings", "override the scenario's retraining.config"
    )
    config.add_argument("--winner-threshold", type=float, help="probability best of a winner")
    config.add_argument("--max-epochs", type=float, help="passes over a round's pairs, at most")
    config.add_argument("--max-pairs", type=int, help="confident pairs kept a campaign")
    config.add_argument("--dpo-steps", type=int, help="DPO step ceiling")
    config.add_argument("--rerank", type=int, help="copy scorer oversampling (1: no scorer)")
    config.add_argument("--train-from", choices=["current", "base"], help="where a round starts")
    config.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--probe", type=int, default=PROBE, help="candidates in each probe")
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help="scenario YAML file")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where the plot goes")
    args = parser.parse_args(argv)
    SCENARIO = args.scenario
    PROBE = args.probe
    PLOT = args.plot
    flags = {
        "winner_threshold": args.winner_threshold,
        "max_epochs": args.max_epochs,
        "max_pairs_per_campaign": args.max_pairs,
        "dpo_steps": args.dpo_steps,
        "rerank_oversample": args.rerank,
        "train_from": args.train_from,
        "learning_rate": args.lr,
    }
    OVERRIDES.update({key: value for key, value in flags.items() if value is not None})
    if args.combine:
        combine(args.combine, args.out)
    else:
        main(args.out, args.quick, tuple(args.seeds), tuple(args.arms))


if __name__ == "__main__":
    cli()
