"""The promotion gate: may a freshly trained model version replace the one being served?

A candidate version passes when

1. it ranks held-out winners above losers (log-likelihood) at least as often as the current
   version (minus ``accuracy_tolerance``), on pairs it never trained on, unless the pairs the
   two versions order differently are too few to tell them apart (a one-sided sign test at
   ``accuracy_significance``: with 8 held-out pairs, one pair is noise, not a regression); and
2. it still writes valid, varied copy: its filter pass rate and distinct-2 on the campaigns'
   briefs may not collapse relative to the current version, nor drift below fixed floors
   relative to the lineage's base model (so small losses cannot compound over rounds).

It also records, and refuses on when told to (``scorer_tolerance``, ``real_pairs_tolerance``),
how the copy scorer the version ships rates both versions' samples, and both versions'
pairwise accuracy on a real A/B archive's pairs (``gate_real_pairs``).

Example::

    gate = evaluate_gate("models/v0003", "models/v0002", data.heldout_pairs, briefs=data.briefs)
    print(gate.passed, gate.reasons)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators import (
    LMGenerator,
    NearDuplicateIndex,
    PreferencePair,
    check_candidate,
    distinct_n,
    load_causal_lm,
    load_scorer,
    pair_credit,
    preference_accuracy,
    preference_margins,
)
from adloop.optimizer.real_pairs import archive_pairs
from adloop.optimizer.retrain_config import RetrainConfig

__all__ = ["GateResult", "evaluate_gate", "validity"]


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's verdict and the figures behind it."""

    passed: bool
    reasons: tuple[str, ...]
    metrics: dict[str, float]


def sign_test(lost: int, won: int) -> float:
    """One-sided sign test: the chance of ``lost`` or more losses among ``lost + won`` pairs
    the two versions order differently, were neither version better (1.0 with none).

    Example
    -------
    >>> sign_test(1, 0), sign_test(4, 0), sign_test(0, 3)
    (0.5, 0.0625, 1.0)
    """
    n = lost + won
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


def validity(
    model_dir: Path, briefs: Sequence[Any], *, n: int, seed: int, scorer: Any = None
) -> dict[str, float]:
    """Generate ``n`` candidates per brief; filter pass rate and distinct-2 of what came out.

    The promotion gate's validity check, for one model directory. It samples the model the
    way the LM generator serves copy (its default modes: phrases the model picks in template
    skeletons), because that is what a collapse would show in: a version that learnt to pick
    the same phrases every time. Two things are left out. The copy scorer a version may ship:
    reranking puts copy that passes the filters first, so a reranked version's pass rate would
    be measured on a selection and a plain one's on raw samples. And the best-of selection
    (one sample per candidate here), which would hide a model whose samples mostly fail.
    (Sampled free, as :data:`~adloop.generators.BASELINE` does, a version trained on served
    copy loses distinct-2 by construction: served copy is built from a small phrase bank, and
    every round of the simulated closed loop was refused for it.)

    ``scorer`` (a :class:`~adloop.generators.CopyScorer`): also the mean score of the samples
    (``scorer_mean``), so two versions' raw writing can be compared on one scale.
    """
    generator = LMGenerator(model_dir, rerank=False, best_of=1.0)
    produced = passed = 0
    texts: list[str] = []
    for brief in briefs:
        candidates = generator.generate(brief, n, seed=seed)
        accepted = NearDuplicateIndex(brief.language)
        produced += max(n, len(candidates))  # a model that returns nothing fails the check
        for candidate in candidates:
            texts.append(candidate.text)
            if check_candidate(candidate, brief, accepted=accepted) is None:
                accepted.add(candidate.text)
                passed += 1
    result = {
        "pass_rate": passed / produced if produced else 0.0,
        "distinct_2": distinct_n(texts, 2),
        "n_generated": float(len(texts)),
    }
    if scorer is not None and texts:
        result["scorer_mean"] = float(np.mean(scorer.score(texts)))
    return result


def evaluate_gate(
    candidate_dir: str | Path,
    current_dir: str | Path | None,
    heldout_pairs: Sequence[PreferencePair],
    *,
    briefs: Sequence[Any] = (),
    config: RetrainConfig | None = None,
    base_dir: str | Path | None = None,
) -> GateResult:
    """Compare a trained version with the current one on held-out pairs and on validity.

    Passes when (1) held-out pairwise accuracy >= the current version's minus
    ``accuracy_tolerance``, or the shortfall fails a one-sided sign test on the pairs the two
    versions order differently at ``accuracy_significance``; (2) with ``gate_candidates`` > 0
    and briefs given, the filter pass rate >= ``min_pass_rate_ratio`` x the current one and
    distinct-2 >= ``min_distinct_ratio`` x the current one, and, when ``base_dir`` (the
    lineage's first version) is given and is not the current one, both >= the ``..._to_base``
    ratios x the base model's, so that small losses round after round cannot add up to a
    collapse. ``current_dir=None`` compares against nothing (first version).

    Example::

        gate = evaluate_gate("models/v0003", "models/v0002", data.heldout_pairs,
                             briefs=data.briefs)
        print(gate.passed, gate.reasons)
    """
    config = config or RetrainConfig()
    max_length = config.training.max_length
    metrics: dict[str, float] = {"heldout_pairs": float(len(heldout_pairs))}
    reasons: list[str] = []
    candidate_dir = Path(candidate_dir)
    model, tokenizer = load_causal_lm(candidate_dir)
    if heldout_pairs:
        new_right = pair_credit(
            preference_margins(model, tokenizer, heldout_pairs, max_length=max_length)
        )
        metrics["heldout_accuracy"] = float(new_right.mean())
    del model
    if current_dir is not None and heldout_pairs:
        current_model, current_tokenizer = load_causal_lm(Path(current_dir))
        current_right = pair_credit(
            preference_margins(
                current_model, current_tokenizer, heldout_pairs, max_length=max_length
            )
        )
        del current_model
        metrics["current_heldout_accuracy"] = float(current_right.mean())
        # Pairs only the current version gets right, against pairs only the new one gets right.
        lost = int((current_right > new_right).sum())
        won = int((new_right > current_right).sum())
        metrics["heldout_pairs_lost"], metrics["heldout_pairs_won"] = float(lost), float(won)
        metrics["heldout_sign_test_p"] = sign_test(lost, won)
        if (
            metrics["heldout_accuracy"]
            < metrics["current_heldout_accuracy"] - config.accuracy_tolerance
            and metrics["heldout_sign_test_p"] < config.accuracy_significance
        ):
            reasons.append(
                f"held-out accuracy {metrics['heldout_accuracy']:.3f} is below the current "
                f"version's {metrics['current_heldout_accuracy']:.3f} ({lost} pairs lost, "
                f"{won} won; sign test p = {metrics['heldout_sign_test_p']:.3f})"
            )
    if config.gate_real_pairs:
        _check_real_pairs(candidate_dir, current_dir, config, metrics, reasons)
    if config.gate_candidates and briefs:
        chosen_briefs = list(briefs)[: config.gate_briefs]
        scorer = load_scorer(candidate_dir)
        n, seed = config.gate_candidates, config.seed
        new = validity(candidate_dir, chosen_briefs, n=n, seed=seed, scorer=scorer)
        metrics.update({f"{k}": v for k, v in new.items()})
        if current_dir is not None:
            old = validity(Path(current_dir), chosen_briefs, n=n, seed=seed, scorer=scorer)
            metrics.update({f"current_{k}": v for k, v in old.items()})
            tolerance = config.scorer_tolerance
            if (
                tolerance is not None
                and "scorer_mean" in new
                and "scorer_mean" in old
                and new["scorer_mean"] < old["scorer_mean"] - tolerance
            ):
                reasons.append(
                    f"the copy scorer rates its samples below the current version's: "
                    f"{new['scorer_mean']:+.3f} vs {old['scorer_mean']:+.3f}"
                )
            if new["pass_rate"] < config.min_pass_rate_ratio * old["pass_rate"]:
                reasons.append(
                    f"filter pass rate collapsed: {new['pass_rate']:.2f} vs {old['pass_rate']:.2f}"
                )
            if new["distinct_2"] < config.min_distinct_ratio * old["distinct_2"]:
                reasons.append(
                    f"distinct-2 collapsed: {new['distinct_2']:.2f} vs {old['distinct_2']:.2f}"
                )
            if base_dir is not None and Path(base_dir) != Path(current_dir):
                base = validity(
                    Path(base_dir), chosen_briefs, n=config.gate_candidates, seed=config.seed
                )
                metrics.update({f"base_{k}": v for k, v in base.items()})
                for key, label, ratio in (
                    ("pass_rate", "filter pass rate", config.min_pass_rate_ratio_to_base),
                    ("distinct_2", "distinct-2", config.min_distinct_ratio_to_base),
                ):
                    if new[key] < ratio * base[key]:
                        reasons.append(
                            f"{label} drifted down since the base model: {new[key]:.2f} vs "
                            f"{base[key]:.2f} (floor {ratio:g} x the base's)"
                        )
        elif new["n_generated"] == 0:
            reasons.append("the model produced no candidates")
    return GateResult(passed=not reasons, reasons=tuple(reasons), metrics=metrics)


def _check_real_pairs(
    candidate_dir: Path,
    current_dir: str | Path | None,
    config: RetrainConfig,
    metrics: dict[str, float],
    reasons: list[str],
) -> None:
    """Both versions' pairwise accuracy on a real archive's held-out pairs (``real_*``)."""
    pairs = archive_pairs(
        config.gate_real_pairs or "", limit=config.gate_real_pairs_limit, seed=config.seed
    )
    metrics["real_pairs"] = float(len(pairs))
    if not pairs:
        return
    max_length = config.training.max_length
    for key, directory in (
        ("real_accuracy", candidate_dir),
        ("current_real_accuracy", current_dir),
    ):
        if directory is None:
            continue
        model, tokenizer = load_causal_lm(Path(directory))
        metrics[key] = preference_accuracy(model, tokenizer, pairs, max_length=max_length)
        del model
    tolerance = config.real_pairs_tolerance
    if (
        tolerance is not None
        and "current_real_accuracy" in metrics
        and metrics["real_accuracy"] < metrics["current_real_accuracy"] - tolerance
    ):
        reasons.append(
            f"accuracy on the real A/B pairs {metrics['real_accuracy']:.3f} is below the "
            f"current version's {metrics['current_real_accuracy']:.3f}"
        )
