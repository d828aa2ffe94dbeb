"""Fit the copy scorer a new model version may ship with (reranking of its samples).

With ``rerank_oversample`` above 1, each round fits a :class:`adloop.generators.CopyScorer`
on the campaigns' proven variants and saves it in the new version's directory, but only when
its leave-one-variant-out rank correlation with the observed rates reaches
``scorer_min_spearman``. When it does not, the serving version's scorer carries over if it
reaches that correlation on the variants proven since it was fitted (a test on data it never
saw); otherwise the version samples plainly. In the simulated closed loop, rounds served by a
version without a scorer gained about a quarter of what rounds with one gained (an
association; ``docs/closed_loop_history.md``), and a fresh fit fails most often late in a
campaign, once the variants left are alike and their differences mostly noise.

Example::

    report = fit_version_scorer("models/v0003", data.variants, RetrainConfig(rerank_oversample=4))
    print(report["shipped"], report.get("reason"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from adloop.generators import fit_scorer, load_scorer
from adloop.generators.scorer import out_of_sample_spearman
from adloop.optimizer.retrain_config import RetrainConfig

__all__ = ["fit_version_scorer"]


def fit_version_scorer(
    model_dir: str | Path,
    variants: Sequence[dict[str, Any]],
    config: RetrainConfig,
    current_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Fit a copy scorer on proven variants and save it in ``model_dir`` when it validates.

    Returns what happened (``shipped``, the reason when not, the fit's metrics, and
    ``carried_from`` when the scorer of ``current_dir``, the serving version, carried over),
    for the version's record. A scorer that does not rank left-out variants better than
    ``scorer_min_spearman`` is not saved, nor is a carried one that does not rank the variants
    it never saw as well: the version then samples plainly.
    """
    if config.rerank_oversample <= 1:
        return {"shipped": False, "reason": "reranking is off (rerank_oversample 1)"}
    variants = [v for v in variants if v["trials"] > 0]  # min_pair_impressions may be 0
    texts = [v["text"] for v in variants]
    trials = [v["trials"] for v in variants]
    successes = [v["successes"] for v in variants]
    groups = [v["campaign_id"] for v in variants]
    report: dict[str, Any] = {"shipped": False}
    if len(variants) < config.scorer_min_variants:
        report["reason"] = (
            f"{len(variants)} proven variants; a scorer needs {config.scorer_min_variants}"
        )
    else:
        scorer = fit_scorer(texts, trials, successes, groups, oversample=config.rerank_oversample)
        report["metrics"] = scorer.metrics
        if scorer.metrics["loo_spearman"] >= config.scorer_min_spearman:
            scorer.save(model_dir)
            report["shipped"] = True
            return report
        report["reason"] = (
            f"leave-one-out rank correlation {scorer.metrics['loo_spearman']:.2f} is below "
            f"{config.scorer_min_spearman:g}"
        )
    current = load_scorer(current_dir) if current_dir is not None else None
    if current is None or not current.fitted:
        return report
    n_new, spearman = out_of_sample_spearman(current, texts, trials, successes, groups)
    report["current_out_of_sample"] = {"variants": n_new, "spearman": spearman}
    if n_new >= config.scorer_min_variants and spearman >= config.scorer_min_spearman:
        replace(current, oversample=config.rerank_oversample).save(model_dir)
        report.update(shipped=True, carried_from=str(current_dir))
    return report
