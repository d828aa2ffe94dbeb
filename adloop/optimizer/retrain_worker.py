"""The training worker: train one version, fit its scorer and gate it, from plain data.

:func:`train_and_gate` is a top-level function over a plain ``job`` dict (paths, examples and
config as dicts; see :func:`training_job`) so that a process pool can run it: the scheduler
trains in a separate process so that serving never stalls. The worker never touches the
store (DuckDB allows one writer process); the round registers what it returns.

Example::

    job = training_job(config, data, from_dir=current, current_dir=current,
                       out_dir=root / "v0003", version="v0003", parent="v0002", base=base)
    outcome = train_and_gate(job)  # or executor.submit(train_and_gate, job).result()
    print(outcome["gate"]["passed"])
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adloop.generators import PreferencePair, SFTExample, load_brief, train_version
from adloop.generators.training import Progress
from adloop.optimizer.gate import evaluate_gate
from adloop.optimizer.retrain_config import RetrainConfig
from adloop.optimizer.retrain_data import RetrainDataset
from adloop.optimizer.retrain_scorer import fit_version_scorer

__all__ = ["log_progress", "train_and_gate", "training_job"]

_LOG = logging.getLogger("adloop.retrain")


def _config_dict(config: RetrainConfig) -> dict[str, Any]:
    """The config as plain data that :meth:`RetrainConfig.from_dict` reads back."""
    data = asdict(config)
    data["training"] = config.training.to_dict()
    if isinstance(data["training"].get("lora_target_modules"), list):
        data["training"]["lora_target_modules"] = tuple(data["training"]["lora_target_modules"])
    return data


def training_job(
    config: RetrainConfig,
    data: RetrainDataset,
    *,
    from_dir: str,
    current_dir: str,
    out_dir: str | Path,
    version: str,
    parent: str,
    base: str,
) -> dict[str, Any]:
    """Pack one round's work for :func:`train_and_gate` as plain, cheaply pickled data.

    ``from_dir`` is the model training starts from, ``current_dir`` the serving version the
    gate compares with, ``base`` the lineage's first model (the gate's fixed reference).
    """
    return {
        "config": _config_dict(config),
        "winners": [asdict(w) for w in data.winners],
        "pairs": [asdict(p) for p in data.pairs],
        "heldout_pairs": [asdict(p) for p in data.heldout_pairs],
        "briefs": [b.model_dump(mode="json") for b in data.briefs],
        "from_dir": from_dir,
        "current_dir": current_dir,
        "out_dir": str(out_dir),
        "version": version,
        "parent": parent,
        "base": base,
        "data_hash": data.data_hash,
        "variants": list(data.variants),
    }


def log_progress(event: dict[str, Any]) -> None:
    """A picklable progress hook for process pools: logs each tenth of a phase (and its end)."""
    steps, step = event.get("steps"), event.get("step")
    if steps and step and (step == steps or step % max(1, steps // 10) == 0):
        _LOG.info("retraining %s: step %d/%d, loss %.3f", event["phase"], step, steps,
                  event.get("loss", float("nan")))  # fmt: skip
    elif not steps:
        _LOG.info("retraining: %s", event["phase"])


def train_and_gate(job: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Train one version and run the gate; a top-level function so a process pool can run it.

    ``job`` comes from :func:`training_job`; returns the new version's directory, training
    metrics, steps, scorer report, the gate's verdict and the seconds each part took.
    ``progress`` hears of each training step and of the phases after it (``scorer``,
    ``gate``); in a process pool it must be picklable, such as :func:`log_progress`.
    """
    tell = progress or (lambda event: None)
    config = RetrainConfig.from_dict(job["config"])
    if config.training.threads:
        import torch

        torch.set_num_threads(config.training.threads)
    winners = [SFTExample(**e) for e in job["winners"]]
    pairs = [PreferencePair(**p) for p in job["pairs"]]
    heldout = [PreferencePair(**p) for p in job["heldout_pairs"]]
    briefs = [load_brief(b) for b in job["briefs"]]
    started = time.perf_counter()
    result = train_version(
        job["from_dir"],
        job["out_dir"],
        sft_examples=winners,
        pairs=pairs,
        config=config.training,
        version=job["version"],
        parent=job["parent"],
        base=job["base"],
        data_hash=job["data_hash"],
        progress=progress,
    )
    tell({"phase": "scorer"})
    scorer = fit_version_scorer(
        result.model_dir, job.get("variants", []), config, current_dir=job["current_dir"]
    )
    trained = time.perf_counter()
    tell({"phase": "gate"})
    gate = evaluate_gate(
        result.model_dir,
        job["current_dir"],
        heldout,
        briefs=briefs,
        config=config,
        base_dir=job["base"],
    )
    gated = time.perf_counter()
    return {
        "model_dir": str(result.model_dir),
        "training_metrics": result.metrics,
        "steps": result.steps,
        "scorer": scorer,
        "gate": {"passed": gate.passed, "reasons": list(gate.reasons), "metrics": gate.metrics},
        "seconds": {"train": trained - started, "gate": gated - trained},
    }
