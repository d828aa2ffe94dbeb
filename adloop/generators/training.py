"""Fine-tune a causal language model on winning ad copy: the training loop.

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

The pieces around it, each in its own module:

* :mod:`.training_config` — :class:`TrainingConfig`, how to fine-tune;
* :mod:`.training_data` — :class:`SFTExample`, :class:`PreferencePair`, the data hash and
  the tokenization shared with generation;
* :mod:`.likelihood` — completion log-probabilities, SFT loss, pair margins and accuracy;
* :mod:`.checkpoints` — :func:`train_version`: load a model directory, train, and write a
  new versioned directory atomically.

torch, transformers and peft are imported inside functions so importing this module
stays cheap.

Example::

    from adloop.generators import SFTExample, TrainingConfig, fine_tune
    model, metrics = fine_tune(model, tokenizer, sft_examples=winners,
                               config=TrainingConfig(sft_steps=5))
    print(metrics["sft_loss_after"])
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adloop.generators.errors import TrainingError
from adloop.generators.likelihood import preference_margins, sft_loss, shared_prompt_logprobs
from adloop.generators.training_config import TrainingConfig
from adloop.generators.training_data import PreferencePair, SFTExample, encode, pad_id

__all__ = ["Progress", "fine_tune", "resolve_device"]

#: A progress hook: called with a dict such as ``{"phase": "sft", "step": 3, "steps": 40,
#: "loss": 2.1}``. It must be picklable (a module-level function) to reach a process pool.
Progress = Callable[[dict[str, Any]], None]


def resolve_device(config_device: str | None) -> Any:
    """The torch device to train on: ``config_device``, else CUDA when present, else CPU."""
    import torch

    if config_device:
        return torch.device(config_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    model: Any,
    steps: int,
    n_items: int,
    config: TrainingConfig,
    rng: random.Random,
    loss_of_batch: Any,
    progress: Progress | None = None,
    phase: str = "train",
) -> tuple[float, float]:
    """Train ``steps`` steps on shuffled batches of ``n_items`` items; first and last loss.

    ``progress`` is called after every step with ``phase``, ``step``, ``steps`` and ``loss``.
    """
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
    for step, indices in enumerate(_batches(n_items, config.batch_size, steps, rng), 1):
        loss = loss_of_batch(indices)
        if not torch.isfinite(loss):
            raise TrainingError(f"training loss became {float(loss)}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress({"phase": phase, "step": step, "steps": steps, "loss": losses[-1]})
    model.eval()
    return losses[0], losses[-1]


def fine_tune(
    model: Any,
    tokenizer: Any,
    *,
    sft_examples: Sequence[SFTExample] = (),
    pairs: Sequence[PreferencePair] = (),
    config: TrainingConfig | None = None,
    progress: Progress | None = None,
    adapter_dir: str | Path | None = None,
) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` in memory: SFT on ``sft_examples``, then DPO on ``pairs``.

    ``adapter_dir``: with LoRA, the trained adapter alone is also saved there (peft's format)
    before it is merged into the returned model.

    ``progress``, when given, hears of every optimiser step (``phase`` ``sft`` or ``dpo``,
    ``step``, ``steps``, ``loss``), for a progress bar or a log line.

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
    device = resolve_device(config.device)
    model.to(device)
    pad = pad_id(tokenizer)
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
                encode(tokenizer, e.prompt, e.completion, config.max_length) for e in sft_examples
            ]
            # Weights are scaled by their mean over the whole set, not per batch: a batch of
            # two marginal winners must weigh less than a batch holding a big clear winner.
            weights = torch.tensor([e.weight for e in sft_examples], device=device)
            weights = weights / weights.mean()

            def sft_batch_loss(indices: list[int]) -> Any:
                total, count = shared_prompt_logprobs(
                    model, [encoded[i] for i in indices], pad, device
                )
                w = weights[indices]
                return -((total / count.clamp(min=1)) * w).sum() / len(indices)

            metrics["sft_train_loss_first"], metrics["sft_train_loss_last"] = _run_phase(
                model, sft_steps, len(encoded), config, rng, sft_batch_loss, progress, "sft"
            )

        if dpo_steps:
            chosen = [encode(tokenizer, p.prompt, p.chosen, config.max_length) for p in pairs]
            rejected = [encode(tokenizer, p.prompt, p.rejected, config.max_length) for p in pairs]
            pair_weights = torch.tensor([p.weight for p in pairs], device=device)
            pair_weights = pair_weights / pair_weights.mean()  # as for SFT: across batches

            def dpo_batch_loss(indices: list[int]) -> Any:
                both = [chosen[i] for i in indices] + [rejected[i] for i in indices]
                total, count = shared_prompt_logprobs(model, both, pad, device)
                n = len(indices)
                policy_margin = total[:n] - total[n:]
                logits = config.dpo_beta * (policy_margin - reference[indices])
                w = pair_weights[indices]
                loss = -(torch.nn.functional.logsigmoid(logits) * w).sum() / n
                if config.dpo_sft_weight:
                    nll = -(total[:n] / count[:n].clamp(min=1) * w).sum() / n
                    loss = loss + config.dpo_sft_weight * nll
                return loss

            metrics["dpo_train_loss_first"], metrics["dpo_train_loss_last"] = _run_phase(
                model, dpo_steps, len(pairs), config, rng, dpo_batch_loss, progress, "dpo"
            )
        if config.lora and adapter_dir is not None:
            model.save_pretrained(Path(adapter_dir))
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
