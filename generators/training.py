"""Fine-tune a causal language model on winning ad copy.

Two objectives, run in this order when both have data:

1. **Supervised fine-tuning (SFT)** on winners: prompt = the brief as the LM generator
   builds it, target = the winning copy; each example's token loss is weighted by its
   lift (and confidence), so a big clear winner teaches more than a marginal one. Weights
   are divided by their mean over the data set (not per batch), so they hold across batches
   and the learning rate keeps its meaning whatever their scale.
2. **Direct preference optimisation (DPO, Rafailov et al. 2023)** on confident pairs:
   raise ``log p(chosen) - log p(rejected)`` relative to the starting model. The
   reference log-probabilities are computed once before training (the reference
   model is frozen, so they are constants); this works for LoRA and full fine-tuning
   alike without keeping a second copy of the model in memory.

LoRA adapters (peft) are the default; ``lora=False`` fine-tunes every weight (fine
for small models). The loop is a plain torch loop: AdamW, linear warm-up, gradient
clipping, a seeded shuffle. CPU by default, CUDA when present.

:func:`train_version` wraps it for the retraining loop: load a model directory, train,
merge the adapters, and write a new, versioned, self-contained model directory
(weights, tokenizer and ``training.json`` with config, data hash, steps and metrics)
atomically: the directory appears complete or not at all.

torch, transformers and peft are imported inside functions so importing this module
stays cheap.

Example::

    from adloop.generators.training import SFTExample, TrainingConfig, train_version
    result = train_version(
        "~/.cache/adloop/models/smollm2-135m-instruct", "/tmp/models/v2",
        sft_examples=[SFTExample(prompt="Write an ad for rings.", completion="Rings, made to fit")],
        config=TrainingConfig(sft_steps=10),
    )
    print(result.metrics["sft_loss_after"])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adloop.generators.errors import TrainingError

__all__ = [
    "SFTExample",
    "PreferencePair",
    "TrainingConfig",
    "TrainingResult",
    "TrainingError",
    "format_prompt",
    "completion_logprobs",
    "sft_loss",
    "preference_margins",
    "preference_accuracy",
    "fine_tune",
    "train_version",
    "dataset_hash",
    "TRAINING_RECORD",
]

#: Name of the JSON record written into every trained model directory.
TRAINING_RECORD = "training.json"
#: Version label file the LM generator reads (see ``generators.lm.model_version``).
VERSION_RECORD = "adloop_version.json"


@dataclass(frozen=True, kw_only=True)
class SFTExample:
    """One winner: the prompt the generator sees and the copy it should write.

    ``weight`` scales this example's loss (lift x confidence from the retraining
    data builder); it must be positive.
    """

    prompt: str
    completion: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.completion.strip():
            raise TrainingError("SFTExample.completion is empty")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise TrainingError(f"SFTExample.weight must be a positive number, got {self.weight!r}")


@dataclass(frozen=True, kw_only=True)
class PreferencePair:
    """One confident comparison: under ``prompt``, ``chosen`` beat ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.chosen.strip() or not self.rejected.strip():
            raise TrainingError("PreferencePair.chosen and .rejected must be non-empty")
        if self.chosen == self.rejected:
            raise TrainingError("PreferencePair.chosen and .rejected are the same text")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise TrainingError(
                f"PreferencePair.weight must be a positive number, got {self.weight!r}"
            )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """How to fine-tune. Every field is recorded in the model directory's ``training.json``."""

    lora: bool = True
    """Train LoRA adapters (peft) and merge them on save; False fine-tunes every weight."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (effective scale lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """Linear layers that get adapters; "all-linear": every linear layer but the output head."""
    sft_steps: int = 20
    """Optimizer steps on winners (0 skips SFT)."""
    dpo_steps: int = 20
    """Optimizer steps on preference pairs (0 skips DPO)."""
    batch_size: int = 4
    """Examples (or pairs) per step."""
    max_epochs: float | None = None
    """Most passes over each phase's data: caps ``sft_steps`` and ``dpo_steps`` so that a
    handful of winners is not learned by heart (None: no cap)."""
    learning_rate: float = 2e-4
    """AdamW peak learning rate (LoRA likes ~1e-4..1e-3, full fine-tuning ~1e-5)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 2
    """Linear warm-up steps at the start of each phase."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold."""
    dpo_beta: float = 0.1
    """DPO temperature: larger keeps the model closer to the reference."""
    dpo_sft_weight: float = 0.0
    """Optional NLL term on the chosen copy during DPO (keeps likelihoods from drifting down)."""
    max_length: int = 128
    """Longest prompt + completion in tokens; the prompt is cut from the left when needed."""
    seed: int = 0
    """Seeds the shuffle, LoRA initialisation and dropout."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CUDA when available, else CPU."""
    threads: int | None = None
    """torch intra-op threads for CPU training; None leaves torch's default."""
    evaluate: bool = True
    """Score the training data before and after (SFT loss, pair margins); costs forward passes."""

    def __post_init__(self) -> None:
        positive_ints = ("lora_r", "lora_alpha", "batch_size", "max_length")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise TrainingError(
                    f"TrainingConfig.{name} must be a positive integer, got {value!r}"
                )
        for name in ("sft_steps", "dpo_steps", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise TrainingError(f"TrainingConfig.{name} must be an integer >= 0, got {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise TrainingError(
                "TrainingConfig.learning_rate must be a positive number, "
                f"got {self.learning_rate!r}"
            )
        if not (0.0 <= self.lora_dropout < 1.0):
            raise TrainingError(
                f"TrainingConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}"
            )
        if not (self.dpo_beta > 0):
            raise TrainingError(f"TrainingConfig.dpo_beta must be > 0, got {self.dpo_beta!r}")
        if self.dpo_sft_weight < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise TrainingError(
                "TrainingConfig.dpo_sft_weight and weight_decay must be >= 0 and max_grad_norm > 0"
            )
        if self.max_epochs is not None and not (
            self.max_epochs > 0 and math.isfinite(self.max_epochs)
        ):
            raise TrainingError(
                f"TrainingConfig.max_epochs must be a positive number, got {self.max_epochs!r}"
            )
        if self.threads is not None and self.threads <= 0:
            raise TrainingError(f"TrainingConfig.threads must be positive, got {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the configuration."""
        data = asdict(self)
        if isinstance(data["lora_target_modules"], tuple):
            data["lora_target_modules"] = list(data["lora_target_modules"])
        return data


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_version` wrote: the model directory and its training record."""

    model_dir: Path
    version: str
    data_hash: str
    steps: dict[str, int]
    metrics: dict[str, float]
    record: dict[str, Any] = field(repr=False)


# ----------------------------------------------------------------------------- data


def dataset_hash(
    sft_examples: Sequence[SFTExample] = (), pairs: Sequence[PreferencePair] = ()
) -> str:
    """A SHA-256 of the training data (order-independent), recorded with every version."""
    rows = sorted(json.dumps(asdict(e), sort_keys=True, ensure_ascii=False) for e in sft_examples)
    rows += sorted(
        json.dumps({"pair": asdict(p)}, sort_keys=True, ensure_ascii=False) for p in pairs
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model is conditioned on, exactly as the LM generator builds it.

    With a chat template: the generator's system message and ``prompt`` as the user turn,
    ending at the assistant's turn; without one: ``prompt`` and a blank line. Training on
    this text teaches the same conditional distribution that generation samples from.
    """
    from adloop.generators.lm import SYSTEM_MESSAGE

    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": prompt},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt.rstrip() + "\n\n"


def _encode(tokenizer: Any, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + EOS, and how many leading ids belong to the prompt.

    Prompt and completion are tokenized separately so the boundary is exact; when too
    long, the prompt loses tokens from its start (the completion is what we learn).
    """
    # The chat template writes its own special tokens; a plain prompt gets the tokenizer's.
    plain = not getattr(tokenizer, "chat_template", None)
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=plain)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    completion_ids = completion_ids[: max_length - 1]
    room = max_length - len(completion_ids)
    prompt_ids = prompt_ids[-room:]
    return [*prompt_ids, *completion_ids], len(prompt_ids)


def _collate(encoded: list[tuple[list[int], int]], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-pad a batch; labels are -100 on prompt and padding positions."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "labels": labels.to(device),
    }


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0


def _sequence_logprobs(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per-row sum of completion-token log-probs and the number of completion tokens."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1, :].float()
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    safe_targets = targets.masked_fill(~mask, 0)
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, safe_targets.unsqueeze(-1))
    token_logprobs = token_logprobs.squeeze(-1) * mask
    return token_logprobs.sum(-1), mask.sum(-1)


def _device(config_device: str | None) -> Any:
    import torch

    if config_device:
        return torch.device(config_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- evaluation


def completion_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 128,
    per_token: bool = False,
) -> list[float]:
    """log p(completion | prompt) under ``model``, one float per pair of inputs.

    ``per_token=True`` divides by the number of completion tokens (length-normalised).

    Example::

        scores = completion_logprobs(model, tokenizer, ["Write an ad."], ["Rings that fit"])
    """
    import torch

    if len(prompts) != len(completions):
        raise TrainingError("completion_logprobs needs as many prompts as completions")
    device = _model_device(model)
    pad = _pad_id(tokenizer)
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                encoded = [
                    _encode(tokenizer, p, c, max_length)
                    for p, c in zip(
                        prompts[start : start + batch_size],
                        completions[start : start + batch_size],
                        strict=True,
                    )
                ]
                total, count = _sequence_logprobs(model, _collate(encoded, pad, device))
                values = total / count.clamp(min=1) if per_token else total
                out.extend(float(v) for v in values.cpu())
    finally:
        model.train(was_training)
    return out


def sft_loss(
    model: Any, tokenizer: Any, examples: Sequence[SFTExample], *, max_length: int = 128
) -> float:
    """Weighted mean per-token negative log-likelihood of the examples' completions."""
    if not examples:
        raise TrainingError("sft_loss needs at least one example")
    totals = completion_logprobs(
        model,
        tokenizer,
        [e.prompt for e in examples],
        [e.completion for e in examples],
        max_length=max_length,
        per_token=True,
    )
    weight_sum = sum(e.weight for e in examples)
    return -sum(t * e.weight for t, e in zip(totals, examples, strict=True)) / weight_sum


def preference_margins(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    *,
    max_length: int = 128,
    per_token: bool = False,
) -> list[float]:
    """``log p(chosen) - log p(rejected)`` per pair (positive: the model prefers the winner)."""
    prompts = [p.prompt for p in pairs]
    chosen = completion_logprobs(
        model,
        tokenizer,
        prompts,
        [p.chosen for p in pairs],
        max_length=max_length,
        per_token=per_token,
    )
    rejected = completion_logprobs(
        model,
        tokenizer,
        prompts,
        [p.rejected for p in pairs],
        max_length=max_length,
        per_token=per_token,
    )
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def preference_accuracy(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    *,
    max_length: int = 128,
    per_token: bool = False,
) -> float:
    """Share of pairs whose winner the model finds more likely than the loser (ties count half)."""
    if not pairs:
        raise TrainingError("preference_accuracy needs at least one pair")
    margins = preference_margins(
        model, tokenizer, pairs, max_length=max_length, per_token=per_token
    )
    return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins)


# ----------------------------------------------------------------------------- training


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then linear decay to 10 % of the peak rate."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    remaining = max(total - warmup, 1)
    return max(0.1, 1.0 - 0.9 * (step - warmup) / remaining)


def _batches(n_items: int, batch_size: int, steps: int, rng: random.Random) -> list[list[int]]:
    """Index batches for ``steps`` steps: shuffled epochs, repeated as needed."""
    order: list[int] = []
    batches = []
    for _ in range(steps):
        if len(order) < min(batch_size, n_items):
            epoch = list(range(n_items))
            rng.shuffle(epoch)
            order.extend(epoch)
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


def _capped_steps(steps: int, n_items: int, config: TrainingConfig) -> int:
    """``steps``, or fewer when ``max_epochs`` passes over ``n_items`` take fewer (0 if none)."""
    if n_items == 0:
        return 0
    if config.max_epochs is None:
        return steps
    per_epoch = math.ceil(n_items / config.batch_size)
    return min(steps, max(1, math.ceil(config.max_epochs * per_epoch)))


def _run_phase(
    model: Any, steps: int, config: TrainingConfig, loss_of_batch: Any, batches: list[list[int]]
) -> list[float]:
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, steps, config.warmup_steps)
    )
    model.train()
    losses = []
    for indices in batches:
        loss = loss_of_batch(indices)
        if not torch.isfinite(loss):
            raise TrainingError(f"training loss became {float(loss)}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def fine_tune(
    model: Any,
    tokenizer: Any,
    *,
    sft_examples: Sequence[SFTExample] = (),
    pairs: Sequence[PreferencePair] = (),
    config: TrainingConfig | None = None,
) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` in memory: SFT on ``sft_examples``, then DPO on ``pairs``.

    Returns the trained model (LoRA adapters already merged, so it is a plain
    transformers model again) and metrics: losses before and after on the training
    data, DPO margin and pair accuracy before and after, steps and seconds.

    Example::

        model, metrics = fine_tune(model, tokenizer, sft_examples=winners,
                                   config=TrainingConfig(sft_steps=5))
    """
    import torch

    config = config or TrainingConfig()
    if not sft_examples and not pairs:
        raise TrainingError("nothing to train on: no winners and no preference pairs")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = _device(config.device)
    model.to(device)
    pad = _pad_id(tokenizer)
    metrics: dict[str, float] = {}
    started = time.perf_counter()

    sft_steps = _capped_steps(config.sft_steps, len(sft_examples), config)
    dpo_steps = _capped_steps(config.dpo_steps, len(pairs), config)
    if sft_examples and config.evaluate:
        metrics["sft_loss_before"] = sft_loss(
            model, tokenizer, sft_examples, max_length=config.max_length
        )
    if pairs:
        margins = preference_margins(model, tokenizer, pairs, max_length=config.max_length)
        metrics["dpo_margin_before"] = sum(margins) / len(margins)
        metrics["pair_accuracy_before"] = sum(m > 0 for m in margins) / len(margins)
        reference = torch.tensor(margins, device=device)

    if config.lora:
        from peft import LoraConfig, get_peft_model

        target = config.lora_target_modules
        with warnings.catch_warnings():
            # peft 0.21 reads a property transformers 5 deprecated; nothing we can change.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model = get_peft_model(
                model,
                LoraConfig(
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=list(target) if isinstance(target, tuple) else target,
                    task_type="CAUSAL_LM",
                ),
            )
    else:
        for parameter in model.parameters():
            parameter.requires_grad_(True)

    try:
        if sft_steps:
            encoded = [
                _encode(tokenizer, e.prompt, e.completion, config.max_length) for e in sft_examples
            ]
            # Weights are scaled by their mean over the whole set, not per batch: a batch of
            # two marginal winners must weigh less than a batch holding a big clear winner.
            weights = torch.tensor([e.weight for e in sft_examples], device=device)
            weights = weights / weights.mean()

            def sft_batch_loss(indices: list[int]) -> Any:
                total, count = _sequence_logprobs(
                    model, _collate([encoded[i] for i in indices], pad, device)
                )
                w = weights[indices]
                return -((total / count.clamp(min=1)) * w).sum() / len(indices)

            losses = _run_phase(
                model,
                sft_steps,
                config,
                sft_batch_loss,
                _batches(len(encoded), config.batch_size, sft_steps, rng),
            )
            metrics["sft_train_loss_first"] = losses[0]
            metrics["sft_train_loss_last"] = losses[-1]

        if dpo_steps:
            chosen = [_encode(tokenizer, p.prompt, p.chosen, config.max_length) for p in pairs]
            rejected = [_encode(tokenizer, p.prompt, p.rejected, config.max_length) for p in pairs]
            pair_weights = torch.tensor([p.weight for p in pairs], device=device)
            pair_weights = pair_weights / pair_weights.mean()  # as for SFT: across batches

            def dpo_batch_loss(indices: list[int]) -> Any:
                both = _collate(
                    [chosen[i] for i in indices] + [rejected[i] for i in indices], pad, device
                )
                total, count = _sequence_logprobs(model, both)
                n = len(indices)
                policy_margin = total[:n] - total[n:]
                logits = config.dpo_beta * (policy_margin - reference[indices])
                w = pair_weights[indices]
                loss = -(torch.nn.functional.logsigmoid(logits) * w).sum() / n
                if config.dpo_sft_weight:
                    nll = -(total[:n] / count[:n].clamp(min=1) * w).sum() / n
                    loss = loss + config.dpo_sft_weight * nll
                return loss

            losses = _run_phase(
                model,
                dpo_steps,
                config,
                dpo_batch_loss,
                _batches(len(pairs), config.batch_size, dpo_steps, rng),
            )
            metrics["dpo_train_loss_first"] = losses[0]
            metrics["dpo_train_loss_last"] = losses[-1]
    finally:
        if config.lora:
            model = model.merge_and_unload()
    model.eval()

    if sft_examples and config.evaluate:
        metrics["sft_loss_after"] = sft_loss(
            model, tokenizer, sft_examples, max_length=config.max_length
        )
    if pairs and config.evaluate:
        margins = preference_margins(model, tokenizer, pairs, max_length=config.max_length)
        metrics["dpo_margin_after"] = sum(margins) / len(margins)
        metrics["pair_accuracy_after"] = sum(m > 0 for m in margins) / len(margins)
    metrics["sft_steps"] = sft_steps
    metrics["dpo_steps"] = dpo_steps
    metrics["train_seconds"] = time.perf_counter() - started
    return model, metrics


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
    device = _device(config.device)
    model, tokenizer, stored_dtype = _load_model(base_model_dir, device)
    model, metrics = fine_tune(
        model, tokenizer, sft_examples=sft_examples, pairs=pairs, config=config
    )

    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
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
        (partial / VERSION_RECORD).write_text(
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
