"""Write a trained model version: train from a model directory, save a new one atomically.

:func:`train_version` loads a model directory, fine-tunes it (:func:`adloop.generators.fine_tune`)
and writes a new, versioned, self-contained model directory: weights, tokenizer,
:data:`TRAINING_RECORD` (config, data hash, steps, metrics, lineage) and the version label the
LM generator reads (:data:`adloop.generators.model_dir.VERSION_FILE`). The directory is built
under a temporary sibling name and renamed into place, so it appears complete or not at all.

Example::

    from adloop.generators import SFTExample, TrainingConfig, train_version
    result = train_version(
        "~/.cache/adloop/models/smollm2-135m-instruct", "/tmp/models/v2",
        sft_examples=[SFTExample(prompt="Write an ad for rings.", completion="Rings, made to fit")],
        config=TrainingConfig(sft_steps=10),
    )
    print(result.metrics["sft_loss_after"])
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adloop.generators.errors import TrainingError
from adloop.generators.model_dir import VERSION_FILE
from adloop.generators.training import Progress, fine_tune, resolve_device
from adloop.generators.training_config import TrainingConfig
from adloop.generators.training_data import PreferencePair, SFTExample, dataset_hash

__all__ = ["ADAPTER_DIR", "TRAINING_RECORD", "TrainingResult", "prune_to_adapter", "train_version"]

#: Name of the JSON record written into every trained model directory.
TRAINING_RECORD = "training.json"
#: Sub-directory of a LoRA-trained version holding its adapter alone (a few MB): what is left
#: of the version once :func:`prune_to_adapter` has removed its merged weights.
ADAPTER_DIR = "adapter"
#: Marker written by :func:`prune_to_adapter`.
PRUNED_RECORD = "pruned.json"
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_version` wrote: the model directory and its training record."""

    model_dir: Path
    version: str
    data_hash: str
    steps: dict[str, int]
    metrics: dict[str, float]
    record: dict[str, Any] = field(repr=False)


def _load_model(model_dir: Path, device: Any) -> tuple[Any, Any, Any]:
    """Load a model directory for training in float32; also return its stored dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").exists():
        raise TrainingError(
            f"{model_dir} is not a model directory (no config.json); "
            "install the default model with `adloop models pull smollm2`"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load a causal language model from {model_dir}: {exc}") from exc
    stored = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, torch.float32)
    return model.to(device), tokenizer, stored or torch.float32


def train_version(
    base_model_dir: str | Path,
    out_dir: str | Path,
    *,
    sft_examples: Sequence[SFTExample] = (),
    pairs: Sequence[PreferencePair] = (),
    config: TrainingConfig | None = None,
    version: str | None = None,
    parent: str | None = None,
    base: str | None = None,
    data_hash: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train from ``base_model_dir`` and write a new model directory at ``out_dir``.

    The directory is built under a temporary sibling name and renamed into place
    only when complete, so a crash mid-training leaves no half-written version.
    ``training.json`` inside it records version, parent, base, config, data hash,
    steps, metrics and creation time.

    Example::

        result = train_version(base_dir, models_root / "v0002", sft_examples=winners,
                               pairs=pairs, version="v0002", parent="v0001")
    """
    import torch

    config = config or TrainingConfig()
    base_model_dir = Path(base_model_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists():
        raise TrainingError(f"{out_dir} already exists; every version needs its own directory")
    version = version or out_dir.name
    data_hash = data_hash or dataset_hash(sft_examples, pairs)
    device = resolve_device(config.device)
    model, tokenizer, stored_dtype = _load_model(base_model_dir, device)
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        model, metrics = fine_tune(
            model,
            tokenizer,
            sft_examples=sft_examples,
            pairs=pairs,
            config=config,
            progress=progress,
            adapter_dir=partial / ADAPTER_DIR if config.lora else None,
        )
        model.to(dtype=stored_dtype if isinstance(stored_dtype, torch.dtype) else torch.float32)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        record = {
            "version": version,
            "parent": parent,
            "base": base or str(base_model_dir),
            "trained_from": str(base_model_dir),
            "data_hash": data_hash,
            "n_sft_examples": len(sft_examples),
            "n_pairs": len(pairs),
            "steps": {"sft": int(metrics["sft_steps"]), "dpo": int(metrics["dpo_steps"])},
            "config": config.to_dict(),
            "metrics": metrics,
            "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            **(extra or {}),
        }
        (partial / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        # The LM generator reads the version label from here (provenance of every candidate).
        (partial / VERSION_FILE).write_text(
            json.dumps({"version": version, "base": record["base"], "parent": parent}) + "\n"
        )
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return TrainingResult(
        model_dir=out_dir,
        version=version,
        data_hash=data_hash,
        steps=dict(record["steps"]),
        metrics=metrics,
        record=record,
    )


def prune_to_adapter(model_dir: str | Path, *, reason: str) -> int:
    """Remove a version's merged weights, keeping its LoRA adapter; return the bytes freed.

    A rejected version never serves, but what it learnt stays inspectable: its adapter,
    training record, tokenizer and config remain, and applying the adapter to the model it
    was trained from (``training.json``: ``trained_from``) rebuilds the weights. A version
    trained without LoRA has no adapter and is left whole (returns 0).

    Example::

        freed = prune_to_adapter("models/v0004", reason="rejected by the gate")
    """
    model_dir = Path(model_dir)
    if not (model_dir / ADAPTER_DIR / "adapter_config.json").exists():
        return 0
    freed = 0
    for pattern in _WEIGHT_FILES:
        for path in model_dir.glob(pattern):
            freed += path.stat().st_size
            path.unlink()
    marker = {"reason": reason, "freed_bytes": freed, "adapter": ADAPTER_DIR}
    (model_dir / PRUNED_RECORD).write_text(json.dumps(marker, indent=2) + "\n")
    return freed
