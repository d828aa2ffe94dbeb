"""Read-only views of campaigns as the API returns them: summaries and the full report.

With targeting, each variant shows its ``segments`` (empty: every request), its
``probability_best`` is among the servable variants of the same targeting (they were shown to
the same audience, so their counts compare), and the snapshot shows, besides the weights of
requests without a targeted segment, ``targeted_weights``: each targeted segment's split over
the variants it may be shown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from adloop.bandits import ThompsonSampling, posterior_summary
from adloop.optimizer.arm_stats import arm_counts, stats_by_variant
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.quality import data_quality
from adloop.optimizer.serving import SERVABLE, LiveCampaign, RefreshFailure
from adloop.optimizer.variants import targeting_groups

__all__ = ["campaign_summary", "campaign_view"]

_log = logging.getLogger("adloop.engine")


def campaign_summary(row: Mapping[str, Any], variants: Sequence[Mapping[str, Any]]) -> dict:
    """One line of the campaign list: status, winner and how many variants serve."""
    return {
        "campaign_id": row["campaign_id"],
        "tenant": row["tenant"],
        "name": row.get("name"),
        "objective": row.get("objective"),
        "status": row["status"],
        "winner": row.get("winner_variant_id"),
        "n_variants": len(variants),
        "n_active": sum(v["status"] in SERVABLE for v in variants),
        "n_pending": sum(v["status"] == "pending" for v in variants),
        "created_at": _iso(row.get("created_at")),
    }


def campaign_view(
    store: Any,
    row: Mapping[str, Any],
    live: LiveCampaign | None,
    *,
    config: EngineConfig,
    rng: np.random.Generator,
    lock: threading.RLock,
    refresh_failure: RefreshFailure | None = None,
) -> dict[str, Any]:
    """The campaign with per-variant counts, posteriors, winner, data quality and snapshot.

    ``reviews`` lists every approval and rejection (who, when, note), oldest first; each
    variant also shows its latest ``review`` (null when none: given by hand, or auto-approved).

    The store must be flushed first. ``rng`` is shared with the engine's refreshes, hence
    the ``lock`` around the Monte Carlo draws. When the posteriors cannot be computed
    (corrupt rows the bandits reject), the counts are still shown, the posterior fields are
    null and ``data_quality["posterior_error"]`` says why: one campaign's bad data never
    turns its report into a server error.
    """
    campaign_id = row["campaign_id"]
    variants = store.variants(campaign_id)
    stats = stats_by_variant(store.arm_stats(campaign_id))
    objective = row.get("objective") or "ctr"
    posterior_error = None
    try:
        summary, p_best = _posteriors(variants, stats, objective, config, rng, lock)
    except Exception as error:  # noqa: BLE001 - report it, as the refresh does
        _log.warning("posteriors of campaign %s failed", campaign_id, exc_info=error)
        summary, p_best = None, None
        posterior_error = f"{type(error).__name__}: {error}"
    quality = data_quality(store, campaign_id, stats, config, refresh_failure)
    quality["posterior_error"] = posterior_error
    settings = row.get("settings") or {}
    reviews = [_review_view(r) for r in store.variant_reviews(campaign_id)]
    latest = {r["variant_id"]: r for r in reviews}
    return {
        "campaign_id": campaign_id,
        "tenant": row["tenant"],
        "name": row.get("name"),
        "objective": objective,
        "status": row["status"],
        "winner": row.get("winner_variant_id"),
        "impressions_reported_separately": bool(
            settings.get("impressions_reported_separately", False)
        ),
        "auto_approve": bool(settings.get("auto_approve", False)),
        "created_at": _iso(row.get("created_at")),
        "brief": row.get("brief"),
        "variants": [
            {
                **_variant_view(v, stats.get(v["variant_id"], {}), summary, p_best, i),
                "review": latest.get(v["variant_id"]),
            }
            for i, v in enumerate(variants)
        ],
        "reviews": reviews,
        "data_quality": quality,
        "snapshot": {
            "built_at": _iso(live.built_at) if live else None,
            "weights": live.weights() if live else {},
            "segments": sorted(live.by_segment) if live else [],
            "targeted_weights": live.targeted_weights() if live else {},
        },
    }


def _posteriors(
    variants: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Mapping[str, float]],
    objective: str,
    config: EngineConfig,
    rng: np.random.Generator,
    lock: threading.RLock,
) -> tuple[Mapping[str, np.ndarray], np.ndarray]:
    """Posterior summaries of every variant, and each servable one's probability of being best
    among the servable variants of its targeting."""
    ids = [v["variant_id"] for v in variants]
    with lock:
        summary = posterior_summary(arm_counts(ids, stats), objective, rng=rng) if ids else {}
        servable = [i for i, v in enumerate(variants) if v["status"] in SERVABLE]
        p_best = np.zeros(len(ids))
        policy = ThompsonSampling(objective, n_draws=config.n_draws)
        for group in targeting_groups([variants[i] for i in servable]):
            members = [servable[i] for i in group]
            members_counts = arm_counts([ids[i] for i in members], stats)
            p_best[members] = policy.probability_best(members_counts, rng)
    return summary, p_best


def _variant_view(
    variant: Mapping[str, Any],
    stats: Mapping[str, float],
    summary: Mapping[str, np.ndarray] | None,
    p_best: np.ndarray | None,
    index: int,
) -> dict[str, Any]:
    """One variant's counts and posterior (posterior fields null when ``summary`` is None)."""
    known = summary is not None and p_best is not None
    return {
        "variant_id": variant["variant_id"],
        "text": variant.get("text"),
        "headline": variant.get("headline"),
        "description": variant.get("description"),
        "status": variant["status"],
        "generator": variant.get("generator"),
        "model_version": variant.get("model_version"),
        "parent_ids": list(variant.get("parent_ids") or []),
        "segments": list(variant.get("segments") or []),
        # kept despite the brief's filters: what it overrode, why, who and when
        "filter_override": (variant.get("provenance") or {}).get("filter_override"),
        "impressions": int(stats.get("impressions", 0)),
        "clicks": int(stats.get("clicks", 0)),
        "conversions": int(stats.get("conversions", 0)),
        "value": float(stats.get("value", 0.0)),
        "posterior_mean": float(summary["mean"][index]) if known else None,
        "interval_95": (
            [float(summary["low"][index]), float(summary["high"][index])] if known else None
        ),
        "probability_best": float(p_best[index]) if known else None,
    }


def _review_view(review: Mapping[str, Any]) -> dict[str, Any]:
    """One review as the API shows it: who (``by``), what, when (ISO) and the note."""
    return {
        "variant_id": review["variant_id"],
        "action": review["action"],
        "by": review["reviewer"],
        "at": _iso(review["reviewed_at"]),
        "note": review.get("note"),
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
