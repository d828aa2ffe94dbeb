"""Fit the copy scorer a new model version may ship with (reranking of its samples).

With ``rerank_oversample`` above 1, each round fits a :class:`adloop.generators.CopyScorer`
on the campaigns' proven variants and saves it in the new version's directory, but only when
its leave-one-variant-out rank correlation with the observed rates reaches
``scorer_min_spearman``; otherwise the version samples plainly.

Example::

    report = fit_version_scorer("models/v0003", data.variants, RetrainConfig(rerank_oversample=4))
    print(report["shipped"], report.get("reason"))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adloop.generators import fit_scorer
from adloop.optimizer.retrain_config import RetrainConfig

__all__ = ["fit_version_scorer"]


def fit_version_scorer(
    model_dir: str | Path, variants: Sequence[dict[str, Any]], config: RetrainConfig
) -> dict[str, Any]:
    """Fit a copy scorer on proven variants and save it in ``model_dir`` when it validates.

    Returns what happened (``shipped``, the reason when not, and the fit's metrics), for the
    version's record. A scorer that does not rank left-out variants better than
    ``scorer_min_spearman`` is not saved: the version then samples plainly.
    """
    if config.rerank_oversample <= 1:
        return {"shipped": False, "reason": "reranking is off (rerank_oversample 1)"}
    variants = [v for v in variants if v["trials"] > 0]  # min_pair_impressions may be 0
    if len(variants) < config.scorer_min_variants:
        return {
            "shipped": False,
            "reason": f"{len(variants)} proven variants; a scorer needs "
            f"{config.scorer_min_variants}",
        }
    scorer = fit_scorer(
        [v["text"] for v in variants],
        [v["trials"] for v in variants],
        [v["successes"] for v in variants],
        [v["campaign_id"] for v in variants],
        oversample=config.rerank_oversample,
    )
    report: dict[str, Any] = {"shipped": False, "metrics": scorer.metrics}
    if scorer.metrics["loo_spearman"] < config.scorer_min_spearman:
        report["reason"] = (
            f"leave-one-out rank correlation {scorer.metrics['loo_spearman']:.2f} is below "
            f"{config.scorer_min_spearman:g}"
        )
        return report
    scorer.save(model_dir)
    report["shipped"] = True
    return report
