"""Winner-driven retraining: from the event log to a new, gated, promoted model version.

One round (:func:`retrain_round`) does, top to bottom:

1. **Data** (:func:`~adloop.optimizer.retrain_data.build_dataset`): winners, runners-up and
   confident pairs per campaign and segment, from the store's deduplicated arm stats; the
   data set is hashed and the hash recorded with the model version.
2. **Split**: a seeded share of the pairs is held out for the gate and never trained on.
3. **Train** (:func:`~adloop.optimizer.retrain_worker.train_and_gate`, which calls
   :func:`adloop.generators.train_version`) from the current version: SFT on winners, DPO on
   the training pairs, LoRA by default. Runs in the caller's process or in an executor (the
   scheduler passes a process pool so serving never stalls).
4. **Gate** (:func:`~adloop.optimizer.gate.evaluate_gate`): the candidate must rank held-out
   winners above losers (log-likelihood) at least as often as the current version, and must
   still write valid copy: its filter pass rate and distinct-2 on the campaigns' briefs may
   not collapse relative to the current version.
5. **Register and promote**: the version is always registered (with its metrics and the
   gate's verdict); only a passing version is promoted. Promotion is one row appended by
   the store, so readers switch from one version to the next between requests
   (:mod:`~adloop.optimizer.model_swap`); ``adloop models rollback`` goes back one promotion.

A failure anywhere (bad data, a training crash, a killed worker) leaves the current
version promoted and is reported with ``outcome="failed"``.

The modules, one job each: :mod:`.retrain_config` (settings), :mod:`.retrain_data` (data
set), :mod:`.retrain_worker` (train and gate, process-pool friendly), :mod:`.gate`,
:mod:`.retrain_scorer` (the copy scorer a version may ship), :mod:`.model_swap` (serving
switches to a new version) and this one (the round). Their public names are importable from
here too.

Example::

    from adloop.storage import Store
    from adloop.optimizer.retrain import RetrainConfig, retrain_round
    with Store("adloop.duckdb") as store:
        report = retrain_round(store, config=RetrainConfig())
        print(report.outcome, report.version)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from adloop.generators import ModelNotFoundError
from adloop.generators.checkpoints import prune_to_adapter
from adloop.generators.training import Progress
from adloop.optimizer.gate import GateResult, evaluate_gate, validity
from adloop.optimizer.model_swap import ServingModel, switch_pool_model
from adloop.optimizer.retrain_config import DEFAULT_BASE_MODEL, RetrainConfig
from adloop.optimizer.retrain_data import RetrainDataset, build_dataset, completion_text
from adloop.optimizer.retrain_scorer import fit_version_scorer
from adloop.optimizer.retrain_worker import train_and_gate, training_job
from adloop.optimizer.tenant_scorer import load_tenant_scorer
from adloop.storage import store_identity, utc_now

__all__ = [
    "DEFAULT_BASE_MODEL",
    "GateResult",
    "RetrainConfig",
    "RetrainDataset",
    "RetrainReport",
    "ServingModel",
    "build_dataset",
    "completion_text",
    "evaluate_gate",
    "fit_version_scorer",
    "retrain_round",
    "switch_pool_model",
    "train_and_gate",
    "validity",
]


@dataclass(frozen=True)
class RetrainReport:
    """What one round did; ``outcome`` is promoted / rejected / skipped / failed."""

    outcome: str
    version: str | None = None
    current_version: str | None = None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    model_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _ensure_current(store: Any, config: RetrainConfig, clock: Callable[[], datetime]) -> dict:
    """The promoted version; registers and promotes the base model on first use."""
    current = store.current_model()
    if current is not None:
        return current
    base_dir = config.base_model_dir()
    if not (base_dir / "config.json").exists():
        raise ModelNotFoundError(
            f"no model at {base_dir}; install the default with `adloop models pull smollm2` "
            "or set retraining.base_model to a local causal LM directory"
        )
    version = "base-" + hashlib.sha256(str(base_dir.resolve()).encode()).hexdigest()[:8]
    if not any(v["version"] == version for v in store.model_versions()):
        store.add_model_version(
            {
                "version": version,
                "path": str(base_dir),
                "base": str(base_dir),
                "parent": None,
                "data_hash": None,
                "metrics": {},
                "created_at": clock(),
            }
        )
    store.promote_model(version)
    return store.current_model()


def _remove_stale_partials(root: Path) -> None:
    """Delete half-written version folders left by a training process that was killed."""
    for path in root.glob(".*.partial-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # still running: another round is writing it
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _next_version(store: Any, root: Path) -> str:
    """The next free version label, ``v0001``, ``v0002``, ... (base versions do not count)."""
    n = sum(1 for v in store.model_versions() if not str(v["version"]).startswith("base-")) + 1
    while (root / f"v{n:04d}").exists():
        n += 1
    return f"v{n:04d}"


def retrain_round(
    store: Any,
    *,
    config: RetrainConfig | None = None,
    campaign_ids: Sequence[str] | None = None,
    executor: Executor | None = None,
    clock: Callable[[], datetime] | None = None,
    on_promote: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
) -> RetrainReport:
    """Run one retraining round now and return what it did (never raises for training failures).

    ``executor``: where training and the gate run (e.g. a ``ProcessPoolExecutor``); None runs
    them in this process. ``on_promote`` is called with the new current-version record after a
    promotion (a serving process uses it to switch models). ``progress`` hears of each training
    step and phase (see :func:`~adloop.optimizer.retrain_worker.train_and_gate`); with an
    executor it must be picklable.

    Example::

        report = retrain_round(store, config=RetrainConfig(base_model="models/tiny"))
        assert report.outcome in {"promoted", "rejected", "skipped", "failed"}
    """
    config = config or RetrainConfig()
    clock = clock or utc_now
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    current = _ensure_current(store, config, clock)
    scorer_of = None
    scorers: dict[str, Any] = {}  # tenant -> its outcome scorer version, for the record
    if config.scorer_pairs:

        def scorer_of(tenant: str) -> Any:
            if tenant not in scorers:
                scorers[tenant] = load_tenant_scorer(store, tenant)
            loaded = scorers[tenant]
            return loaded.scorer if loaded is not None else None

    data = build_dataset(store, config=config, campaign_ids=campaign_ids, scorer_of=scorer_of)
    seconds["data"] = time.perf_counter() - started
    summary = data.summary()
    if not data.winners and not data.pairs:
        return RetrainReport(
            outcome="skipped",
            current_version=current["version"],
            reason="no winners and no confident pairs yet",
            data=summary,
            seconds=seconds,
        )
    if len(data.heldout_pairs) < config.min_holdout_pairs:
        return RetrainReport(
            outcome="skipped",
            current_version=current["version"],
            data=summary,
            seconds=seconds,
            reason=f"{len(data.heldout_pairs)} held-out pairs; the gate needs "
            f"{config.min_holdout_pairs}",
        )
    root = config.models_root_dir(store_identity(store))
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    version = _next_version(store, root)
    base = current.get("base") or current["path"]
    job = training_job(
        config,
        data,
        from_dir=base if config.train_from == "base" else current["path"],
        current_dir=current["path"],
        out_dir=root / version,
        version=version,
        parent=current["version"],
        base=base,
    )
    try:
        if executor is None:
            outcome = train_and_gate(job, progress)
        else:
            outcome = executor.submit(train_and_gate, job, progress).result()
    except Exception as exc:  # noqa: BLE001 - any training failure must leave serving untouched
        seconds["total"] = time.perf_counter() - started
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return RetrainReport(
            outcome="failed",
            version=version,
            current_version=current["version"],
            reason=f"training failed: {detail}",
            data=summary,
            seconds=seconds,
        )
    seconds.update(outcome["seconds"])
    gate = outcome["gate"]
    metrics = {
        "training": outcome["training_metrics"],
        "gate": gate["metrics"],
        "gate_passed": gate["passed"],
        "gate_reasons": gate["reasons"],
        "steps": outcome["steps"],
        "scorer": outcome.get("scorer"),
        "trained_from": job["from_dir"],
        # which outcome scorer version ranked each tenant's scorer pairs (version lineage)
        "tenant_scorers": {t: v.version for t, v in scorers.items() if v is not None},
        "data": summary,
    }
    if not gate["passed"]:
        # A rejected version never serves: keep its adapter and records, not a model copy.
        metrics["pruned_bytes"] = prune_to_adapter(
            outcome["model_dir"], reason="rejected by the gate: " + "; ".join(gate["reasons"])
        )
    store.add_model_version(
        {
            "version": version,
            "path": outcome["model_dir"],
            "base": job["base"],
            "parent": current["version"],
            "data_hash": data.data_hash,
            "metrics": metrics,
            "created_at": clock(),
        }
    )
    (Path(outcome["model_dir"]) / "dataset.json").write_text(
        json.dumps(
            {"data_hash": data.data_hash, "rows": list(data.rows), "variants": list(data.variants)},
            indent=1,
            default=str,
        )
    )
    seconds["total"] = time.perf_counter() - started
    if not gate["passed"]:
        return RetrainReport(
            outcome="rejected",
            version=version,
            current_version=current["version"],
            reason="; ".join(gate["reasons"]),
            data=summary,
            metrics=metrics,
            seconds=seconds,
            model_dir=outcome["model_dir"],
        )
    store.promote_model(version)
    promoted = store.current_model()
    if on_promote is not None:
        on_promote(promoted)
    return RetrainReport(
        outcome="promoted",
        version=version,
        current_version=version,
        data=summary,
        metrics=metrics,
        seconds=seconds,
        model_dir=outcome["model_dir"],
    )
