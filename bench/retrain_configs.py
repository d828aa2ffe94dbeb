"""Training settings compared on one campaign's market data: does the new copy get better?

The closed loop (``bench.closed_loop``) answers the product question but takes half an hour a
seed and mixes training with the gate. This suite isolates training: it runs the busier
retraining scenario once with retraining off (the real engine, the hidden audience deciding
clicks), builds the retraining dataset from the final store as a round would, trains one version
*from the base model* per setting, and reports for each:

- held-out pairwise accuracy (what the promotion gate compares),
- the mean true CTR of a probe of new candidates (what the market would pay for; segment mix),
- distinct-2 and filter pass rate of the gate's validity check, and the simulator's diversity.

Same data, same probe seed, one line per setting: differences are the training's alone. The
settings are the closed-loop experiment's (48 pairs kept, up to 36 DPO steps) with one change
each, named in the row. Rows marked "reranked" take an earlier row's model and add the copy
scorer a round fits on the same store (:mod:`adloop.generators.scorer`): the generator samples
``rerank_oversample`` times as many candidates and keeps the best-scored.

Run: ``python -m bench.retrain_configs [--seed 32] [--probe 48] [--only NAME ...]`` (about five
minutes a setting on 2 cores, plus seven for the simulation). Needs the default model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.closed_loop import ROOT

SCENARIO = ROOT / "examples" / "scenario_retraining_busy.yaml"
#: The experiment's training settings, then one change each; None: the base model untrained.
SETTINGS: dict[str, dict[str, Any] | None] = {
    "base model": None,
    "the experiment's": {},
    "no likelihood term": {"dpo_sft_weight": 0.0},
    "lr 3e-4": {"learning_rate": 3e-4},
    "lr 3e-4, likelihood 1.0": {"learning_rate": 3e-4, "dpo_sft_weight": 1.0},
    "LoRA r 4": {"lora_r": 4, "lora_alpha": 8},
    "DPO beta 0.5": {"dpo_beta": 0.5},
}
#: Rows that add the round's copy scorer to an earlier row's model.
RERANKED: dict[str, str] = {
    "base model, reranked": "base model",
    "the experiment's, reranked": "the experiment's",
}


def _probe(model_dir: Path, brief: Any, world: Any, *, n: int, seed: int, pool_size: int) -> dict:
    """True CTR (segment mix) and diversity of ``n`` new candidates from one model."""
    import numpy as np

    from adloop.generators import GeneratorPool
    from adloop.sim.engine_run import diversity

    pool = GeneratorPool(["lm"], model_dir=str(model_dir))
    texts = [c.text for c in pool.generate(brief, n, seed=seed).candidates]
    rates = world.true_rates(texts).ctr @ world.shares
    return {
        "mean_true_ctr": float(rates.mean()),
        "sem_true_ctr": float(rates.std(ddof=1) / np.sqrt(len(rates))),
        "distinct_trigrams": diversity(texts, pool_size),
        "n_candidates": len(texts),
    }


def main(
    out: Path = Path("bench/results"),
    seed: int = 32,
    probe: int = 48,
    only: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Simulate once, then train and score each setting; write JSON and markdown."""
    import bench.closed_loop as closed_loop
    from adloop.generators import load_brief, load_causal_lm, preference_accuracy, train_version
    from adloop.optimizer.retrain import build_dataset, fit_version_scorer, validity
    from adloop.sim import load_scenario
    from adloop.storage import Store
    from bench._common import write_results

    known = set(SETTINGS) | set(RERANKED)
    unknown = sorted(set(only) - known)
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    wanted = set(only) | {RERANKED[name] for name in only if name in RERANKED}
    scenario = load_scenario(SCENARIO)
    config = closed_loop.experiment_config(scenario.retraining.config)
    config = dataclasses.replace(
        config,
        rerank_oversample=6,  # for the reranked rows
        max_pairs_per_campaign=48,
        training=dataclasses.replace(config.training, dpo_steps=36),
    )
    world = scenario.build_world(seed)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="adloop-retrain-configs-") as tmp:
        workdir = Path(tmp)
        closed_loop.run_arm(scenario, retrain=False, seed=seed, workdir=workdir)
        with Store(workdir / f"off-{seed}.duckdb") as store:
            data = build_dataset(store, config=config)
            brief = load_brief(store.campaigns()[0]["brief"])
        base = config.base_model_dir()
        print(json.dumps(data.summary()), flush=True)
        model_dirs: dict[str, Path] = {}
        for name, change in [*SETTINGS.items(), *RERANKED.items()]:
            if only and name not in wanted:
                continue
            started = time.perf_counter()
            model_dir, scorer = base, None
            if name in RERANKED:
                # a copy of that row's model with the round's scorer beside its weights
                model_dir = shutil.copytree(model_dirs[change], workdir / f"v-{len(model_dirs)}")
                scorer = fit_version_scorer(model_dir, data.variants, config)
            elif change is not None:
                training = dataclasses.replace(config.training, **change)
                model_dir = train_version(
                    base, workdir / f"v-{len(model_dirs)}", pairs=data.pairs, config=training
                ).model_dir
            model_dirs[name] = Path(model_dir)
            if only and name not in only:
                continue  # trained only for a reranked row
            model, tokenizer = load_causal_lm(model_dir)
            accuracy = preference_accuracy(
                model, tokenizer, data.heldout_pairs, max_length=config.training.max_length
            )
            del model
            check = validity(Path(model_dir), [brief], n=config.gate_candidates, seed=0)
            row = {
                "name": name,
                "system": "adloop",
                "seed": seed,
                "train_pairs": len(data.pairs),
                "heldout_pairs": len(data.heldout_pairs),
                "heldout_accuracy": accuracy,
                **_probe(
                    Path(model_dir),
                    brief,
                    world,
                    n=probe,
                    seed=seed * 1000 + 7,
                    pool_size=scenario.generators.pool_size,
                ),
                "gate_distinct_2": check["distinct_2"],
                "gate_pass_rate": check["pass_rate"],
                "scorer_loo_spearman": (scorer or {}).get("metrics", {}).get("loo_spearman"),
                "scorer_shipped": bool(scorer and scorer["shipped"]),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    notes = (
        f"Busier retraining scenario, seed {seed}, retraining off; one version per setting "
        f"trained from the base model on the final store's dataset ({data.summary()})."
    )
    write_results("retrain_configs", rows, out, notes)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seed", type=int, default=32)
    parser.add_argument("--probe", type=int, default=48, help="candidates scored per setting")
    parser.add_argument("--only", nargs="+", default=[], help="run only these settings")
    args = parser.parse_args()
    main(args.out, args.seed, args.probe, tuple(args.only))
