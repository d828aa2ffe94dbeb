"""Held-out winner/loser pairs from a real A/B archive, for the promotion gate.

An archive is a Parquet file with one row per arm: ``test_id``, ``headline``, ``impressions``
and ``clicks`` (``eyecatcher_id``, when present, keeps arms with different images apart), the
format of ``adloop sim replay``. A pair is two arms of one test whose click-through rates
differ significantly (two-sided z-test, ``alpha``), each with ``min_impressions`` or more.

Example::

    pairs = archive_pairs("upworthy_dev.parquet", limit=200)
    pairs[0].chosen, pairs[0].rejected
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

from adloop.generators import PreferencePair, format_completion
from adloop.optimizer.errors import ConfigError

__all__ = ["ARCHIVE_PROMPT", "archive_pairs", "significant_pairs"]

#: The prompt a headline is scored under (the story itself is not part of the pair).
ARCHIVE_PROMPT = "Write a headline for this story that makes readers want to click."
_COLUMNS = ("test_id", "headline", "impressions", "clicks")


def significant_pairs(
    path: str | Path, *, min_impressions: int = 1000, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Every significant winner/loser pair of the archive at ``path``, as plain rows:
    ``test_id``, ``winner``, ``loser``, ``ctr_winner``, ``ctr_loser``, ``p_value`` and, when the
    archive has it, ``eyecatcher_id`` (arms are paired within one test and one image)."""
    import polars as pl

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError("RetrainConfig.gate_real_pairs", f"no archive at {path}")
    frame = pl.read_parquet(path)
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            "RetrainConfig.gate_real_pairs",
            f"{path} lacks the column(s) {missing}; an archive has one row per arm with "
            f"{list(_COLUMNS)}",
        )
    keys = ["test_id", "eyecatcher_id"] if "eyecatcher_id" in frame.columns else ["test_id"]
    pairs: list[dict[str, Any]] = []
    for _, group in frame.group_by(keys, maintain_order=True):
        rows = [r for r in group.rows(named=True) if r["impressions"] >= min_impressions]
        for a, b in itertools.combinations(rows, 2):
            if a["headline"].strip() == b["headline"].strip():
                continue
            rate_a, rate_b = a["clicks"] / a["impressions"], b["clicks"] / b["impressions"]
            pooled = (a["clicks"] + b["clicks"]) / (a["impressions"] + b["impressions"])
            se = math.sqrt(pooled * (1 - pooled) * (1 / a["impressions"] + 1 / b["impressions"]))
            if se == 0:
                continue
            p_value = math.erfc(abs(rate_a - rate_b) / se / math.sqrt(2))
            if p_value >= alpha:
                continue
            win, lose = (a, b) if rate_a > rate_b else (b, a)
            pairs.append(
                {
                    "test_id": a["test_id"],
                    **({"eyecatcher_id": a["eyecatcher_id"]} if len(keys) > 1 else {}),
                    "winner": win["headline"].strip(),
                    "loser": lose["headline"].strip(),
                    "ctr_winner": max(rate_a, rate_b),
                    "ctr_loser": min(rate_a, rate_b),
                    "p_value": p_value,
                }
            )
    return pairs


def archive_pairs(
    path: str | Path,
    *,
    min_impressions: int = 1000,
    alpha: float = 0.05,
    limit: int | None = None,
    seed: int = 0,
) -> list[PreferencePair]:
    """:func:`significant_pairs` as preference pairs under :data:`ARCHIVE_PROMPT`, with both
    headlines written the way the generator writes copy; at most ``limit``, drawn with
    ``seed``."""
    rows = significant_pairs(path, min_impressions=min_impressions, alpha=alpha)
    if limit is not None and len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    return [
        PreferencePair(
            prompt=ARCHIVE_PROMPT,
            chosen=format_completion(row["winner"]),
            rejected=format_completion(row["loser"]),
        )
        for row in rows
    ]
