"""Training data: winners and preference pairs, their hash, and how they become token batches.

* :class:`SFTExample` (a winner) and :class:`PreferencePair` (a confident comparison) are what
  the retraining data builder produces and :func:`adloop.generators.fine_tune` consumes;
* :func:`dataset_hash` names a data set, order-independently, for every version's record;
* :func:`format_prompt`, :func:`encode` and :func:`collate` turn a prompt and a completion
  into the exact token sequence the LM generator samples from, with labels on the
  completion only.

torch is imported inside :func:`collate` only, so importing this module is cheap.

Example::

    from adloop.generators import SFTExample, dataset_hash
    winners = [SFTExample(prompt="Write an ad for rings.", completion="Rings, made to fit")]
    print(dataset_hash(winners)[:8])
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from adloop.generators.errors import TrainingError
from adloop.generators.lm import SYSTEM_MESSAGE

__all__ = [
    "PreferencePair",
    "SFTExample",
    "collate",
    "dataset_hash",
    "encode",
    "format_prompt",
    "pad_id",
]


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
    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": prompt},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt.rstrip() + "\n\n"


def encode(tokenizer: Any, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
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


def collate(encoded: list[tuple[list[int], int]], pad_token_id: int, device: Any) -> dict[str, Any]:
    """Right-pad a batch; labels are -100 on prompt and padding positions."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
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


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with: the pad token, else end-of-sequence, else 0."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0
