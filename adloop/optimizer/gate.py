"""The promotion gate: may a freshly trained model version replace the one being served?

A candidate version passes when

1. it ranks held-out winners above losers (log-likelihood) at least as often as the current
   version (minus ``accuracy_tolerance``), on pairs it never trained on; and
2. it still writes valid, varied copy: its filter pass rate and distinct-2 on the campaigns'
   briefs may not collapse relative to the current version, nor drift below fixed floors
   relative to the lineage's base model (so small losses cannot compound over rounds).

Example::

    gate = evaluate_gate("models/v0003", "models/v0002", data.heldout_pairs, briefs=data.briefs)
    print(gate.passed, gate.reasons)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adloop.generators import (
    BASELINE,
    LMGenerator,
    NearDuplicateIndex,
    PreferencePair,
    check_candidate,
    distinct_n,
    load_causal_lm,
    preference_accuracy,
)
from adloop.optimizer.retrain_config import RetrainConfig

__all__ = ["GateResult", "evaluate_gate", "validity"]


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's verdict and the figures behind it."""

    passed: bool
    reasons: tuple[str, ...]
    metrics: dict[str, float]


def validity(model_dir: Path, briefs: Sequence[Any], *, n: int, seed: int) -> dict[str, float]:
    """Generate ``n`` candidates per brief; filter pass rate and distinct-2 of what came out.

    The promotion gate's validity check, for one model directory. It samples the model
    plainly, without the copy scorer a version may ship: reranking puts copy that passes the
    filters first, so a reranked version's pass rate would be measured on a selection and a
    plain one's on raw samples, and a version without a scorer would look collapsed next to
    one with. For the same reason it samples as :data:`~adloop.generators.BASELINE` does (the
    brief alone, unconstrained, every sample kept): example ads, constraints and a best-of
    selection would hide a model that lost its diversity or its fluency.
    """
    generator = LMGenerator(model_dir, rerank=False, **BASELINE)
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
    return {
        "pass_rate": passed / produced if produced else 0.0,
        "distinct_2": distinct_n(texts, 2),
        "n_generated": float(len(texts)),
    }


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
    ``accuracy_tolerance``; (2) with ``gate_candidates`` > 0 and briefs given, the filter pass
    rate >= ``min_pass_rate_ratio`` x the current one and distinct-2 >= ``min_distinct_ratio``
    x the current one, and, when ``base_dir`` (the lineage's first version) is given and is
    not the current one, both >= the ``..._to_base`` ratios x the base model's, so that
    small losses round after round cannot add up to a collapse. ``current_dir=None``
    compares against nothing (first version).

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
        metrics["heldout_accuracy"] = preference_accuracy(
            model, tokenizer, heldout_pairs, max_length=max_length
        )
    del model
    if current_dir is not None and heldout_pairs:
        current_model, current_tokenizer = load_causal_lm(Path(current_dir))
        metrics["current_heldout_accuracy"] = preference_accuracy(
            current_model, current_tokenizer, heldout_pairs, max_length=max_length
        )
        del current_model
        if (
            metrics["heldout_accuracy"]
            < metrics["current_heldout_accuracy"] - config.accuracy_tolerance
        ):
            reasons.append(
                f"held-out accuracy {metrics['heldout_accuracy']:.3f} is below the current "
                f"version's {metrics['current_heldout_accuracy']:.3f}"
            )
    if config.gate_candidates and briefs:
        chosen_briefs = list(briefs)[: config.gate_briefs]
        new = validity(candidate_dir, chosen_briefs, n=config.gate_candidates, seed=config.seed)
        metrics.update({f"{k}": v for k, v in new.items()})
        if current_dir is not None:
            old = validity(
                Path(current_dir), chosen_briefs, n=config.gate_candidates, seed=config.seed
            )
            metrics.update({f"current_{k}": v for k, v in old.items()})
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
