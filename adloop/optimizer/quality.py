"""Data-quality checks for a campaign: orphans, duplicates and sample-ratio mismatch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adloop.optimizer.arm_stats import VariantStats
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.serving import RefreshFailure

__all__ = ["data_quality", "srm_check"]


def srm_check(
    impressions: Mapping[str, float],
    expected_shares: Mapping[str, float],
    *,
    alpha: float = 0.001,
    min_impressions: int = 100,
) -> dict[str, Any]:
    """Sample-ratio-mismatch test: do observed impressions follow the logged assignments?

    ``expected_shares`` maps each variant to the summed assignment weight the engine logged
    for it (proportional to the impressions it should have received). A chi-square
    goodness-of-fit test compares observed impressions with that split; ``flagged`` is set
    when the p-value is below ``alpha``. A broken integration (impressions dropped or
    double-reported for some variants) shows up here long before it skews the results.

    Example::

        srm_check({"a": 500, "b": 300}, {"a": 400, "b": 400})["flagged"]  # True
    """
    from scipy.stats import chi2

    variant_ids = [v for v, share in expected_shares.items() if share > 0]
    observed = np.array([float(impressions.get(v, 0.0)) for v in variant_ids])
    unexpected = float(
        sum(n for v, n in impressions.items() if expected_shares.get(v, 0.0) <= 0 and n > 0)
    )
    total = float(observed.sum())
    result: dict[str, Any] = {
        "test": "chi-square of observed impressions vs logged assignments",
        "alpha": alpha,
        "impressions": int(total),
        "impressions_without_assignment": int(unexpected),
        "chi2": None,
        "p_value": None,
        "flagged": False,
    }
    if len(variant_ids) < 2 or total < min_impressions:
        result["reason"] = (
            f"not enough data (needs >= 2 assigned variants and >= {min_impressions} impressions)"
        )
        return result
    shares = np.array([float(expected_shares[v]) for v in variant_ids])
    expected = total * shares / shares.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    p_value = float(chi2.sf(statistic, df=len(variant_ids) - 1))
    result.update(chi2=statistic, p_value=p_value, flagged=bool(p_value < alpha))
    result["reason"] = (
        "impressions do not follow the assignment probabilities: check that every decision's "
        "impression is reported once"
        if result["flagged"]
        else "ok"
    )
    return result


def data_quality(
    store: Any,
    campaign_id: str,
    stats: VariantStats,
    config: EngineConfig,
    refresh_failure: RefreshFailure | None = None,
) -> dict[str, Any]:
    """The store's orphan/duplicate counts plus the SRM check and the number of decisions.

    ``stats`` are the campaign's per-variant counts (``stats_by_variant``); the store must
    be flushed first for the numbers to include queued decisions. ``refresh_failure`` is
    the campaign's current snapshot build failure, reported as ``refresh_failure`` (None
    while builds succeed).
    """
    quality = dict(store.data_quality(campaign_id))
    quality["refresh_failure"] = refresh_failure.as_dict() if refresh_failure else None
    decisions = list(store.decision_stats(campaign_id).iter_rows(named=True))
    # Expected impressions follow the logged assignments: each decision is one draw from
    # the allocation in force, so its variant's decision count is the expected share.
    assigned = {row["variant_id"]: float(row["decisions"]) for row in decisions}
    impressions = {v: float(s["impressions"]) for v, s in stats.items()}
    quality["srm"] = srm_check(
        impressions,
        assigned,
        alpha=config.srm_alpha,
        min_impressions=config.srm_min_impressions,
    )
    quality["decisions"] = sum(int(row["decisions"]) for row in decisions)
    return quality
