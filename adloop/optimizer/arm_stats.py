"""The store's per-variant statistics, reshaped for the bandits (``ArmCounts``).

``Store.arm_stats`` returns a polars frame of aggregated counts per variant (and per segment
when asked); the engine looks rows up by variant id and hands aligned arrays to the policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adloop.bandits import ArmCounts

__all__ = ["arm_counts", "stats_by_segment", "stats_by_variant"]

VariantStats = Mapping[str, Mapping[str, float]]
"""Variant id -> that variant's row of counts (impressions, clicks, conversions, value)."""


def stats_by_variant(frame: Any) -> dict[str, dict[str, float]]:
    """Rows of an ``arm_stats`` frame keyed by variant id."""
    return {row["variant_id"]: row for row in frame.iter_rows(named=True)}


def stats_by_segment(
    frame: Any, max_segments: int | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Rows of a per-segment ``arm_stats`` frame keyed by segment, then variant id.

    Rows without a segment are left out: they already count in the campaign-wide stats.
    With ``max_segments``, only that many segments are kept, those with the most impressions
    (ties by name, so the choice repeats): the rest share the campaign-wide split, the
    "other" bucket of ``EngineConfig.max_segments_per_campaign``.
    """
    if max_segments is not None and "segment" in frame.columns:
        import polars as pl

        busiest = (
            frame.filter(pl.col("segment").is_not_null())
            .group_by("segment")
            .agg(pl.col("impressions").sum())
            .sort(["impressions", "segment"], descending=[True, False])
            .head(max_segments)
            .get_column("segment")
        )
        frame = frame.filter(pl.col("segment").is_in(busiest.implode()))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in frame.iter_rows(named=True):
        segment = row.get("segment")
        if segment is None:
            continue
        out.setdefault(segment, {})[row["variant_id"]] = row
    return out


def arm_counts(variant_ids: Sequence[str], stats: VariantStats) -> ArmCounts:
    """``ArmCounts`` for ``variant_ids`` in that order (zeros for a variant with no data)."""

    def column(name: str) -> np.ndarray:
        return np.array([float(stats.get(v, {}).get(name, 0.0) or 0.0) for v in variant_ids])

    return ArmCounts(
        list(variant_ids),
        column("impressions"),
        column("clicks"),
        conversions=column("conversions"),
        value=column("value"),
    )
