"""Wall time of one retraining round with the default model on this machine.

A real DuckDB store gets one campaign (the English jewellery brief) with six variants and
simulated impressions and clicks whose CTRs differ clearly, so the round has a winner and
confident pairs. Then :func:`adloop.optimizer.retrain.retrain_round` runs with the default settings
(LoRA on SmolLM2-135M-Instruct, CPU): collect data, fine-tune (SFT + DPO), gate (held-out
pairs + a validity check that generates candidates with both versions; a version that ships
a copy scorer samples ``rerank_oversample`` times as many), register, promote.

Run: ``python -m bench retrain [--quick]`` (quick: 2 + 2 steps, smaller gate).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

ARMS = [  # headline, description, impressions, clicks
    ("Bespoke Rings by Aurelle", "Book your private design consultation in Paris.", 4000, 150),
    ("Aurelle Fine Jewellery", "Handcrafted 18k gold, made to measure for you.", 4000, 110),
    ("Made-to-Measure Rings", "Aurelle: complimentary consultation, book today.", 4000, 90),
    ("Aurelle 18k Gold Necklaces", "Designed with you in our Paris atelier.", 4000, 60),
    ("Custom Diamond Rings", "Aurelle: luxury jewellery, made for you.", 4000, 45),
    ("Aurelle Jewellery", "See the collection.", 4000, 25),
]


def main(out: Path = Path("bench/results"), quick: bool = False) -> None:
    """Time one round; write ``retrain.json`` and ``retrain.md``."""
    import yaml

    from adloop.optimizer.retrain import RetrainConfig, retrain_round
    from adloop.sim.history import seed_campaign
    from adloop.storage import Store
    from bench._common import max_rss_mb, measure, write_results

    root = Path(__file__).resolve().parent.parent
    brief = yaml.safe_load((root / "examples" / "brief_jewelry_en.yaml").read_text())
    config = RetrainConfig()
    threads = int(os.environ.get("ADLOOP_BENCH_THREADS", "2"))
    training = replace(config.training, threads=threads)
    if quick:
        training = replace(training, sft_steps=2, dpo_steps=2)
        config = replace(config, gate_candidates=2)
    with tempfile.TemporaryDirectory(prefix="adloop-bench-retrain-") as tmp:
        config = replace(config, models_root=str(Path(tmp) / "models"), training=training)
        with Store(Path(tmp) / "bench.duckdb") as store:
            seed_campaign(store, brief, ARMS, campaign_id="c_benchretrain", name="bench")
            with measure(trace_memory=False) as timing:
                report = retrain_round(store, config=config)
    seconds = report.seconds
    rows = [
        {
            "name": "one retraining round",
            "system": "adloop",
            "model": "smollm2-135m-instruct",
            "outcome": report.outcome,
            "winners": report.data.get("winners", 0),
            "train_pairs": report.data.get("train_pairs", 0),
            "heldout_pairs": report.data.get("heldout_pairs", 0),
            "scorer_shipped": (report.metrics.get("scorer") or {}).get("shipped", False),
            "sft_steps": training.sft_steps,
            "dpo_steps": training.dpo_steps,
            "batch_size": training.batch_size,
            "torch_threads": threads,
            "data_s": seconds.get("data", 0.0),
            "train_s": seconds.get("train", 0.0),
            "gate_s": seconds.get("gate", 0.0),
            "total_s": timing.seconds,
            "peak_rss_mb": max_rss_mb(),
        }
    ]
    notes = (
        "LoRA (r=16) on all linear layers, merged on save; CPU only. train_s includes loading "
        "the model and writing the new version; gate_s = held-out pair scoring with both "
        "versions + generating candidates with both for the validity check. "
        f"scorer: {report.metrics.get('scorer')}; "
        f"gate: {report.metrics.get('gate', {})}; reason: {report.reason or '-'}"
    )
    write_results("retrain", rows, out, notes)
