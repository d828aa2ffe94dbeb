"""How to fine-tune: :class:`TrainingConfig`, checked at construction, recorded with every version.

Example::

    from adloop.generators import TrainingConfig
    config = TrainingConfig(sft_steps=10, dpo_steps=0, learning_rate=5e-4)
    config.to_dict()["sft_steps"]  # 10
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from adloop.generators.errors import TrainingError

__all__ = ["TrainingConfig"]


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
