"""Hierarchical shrinkage of per-segment posteriors toward the campaign-level posterior."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .counts import ArmCounts
from .errors import InvalidConfigError, InvalidCountsError
from .posterior import check_objective

__all__ = ["segment_priors"]


def segment_priors(
    segment_counts: Mapping[str, ArmCounts],
    overall: ArmCounts,
    *,
    objective: str = "ctr",
    base_prior: tuple[float | np.ndarray, float | np.ndarray] = (1.0, 1.0),
    min_impressions: float = 100.0,
    min_strength: float = 2.0,
    max_strength: float = 5000.0,
    default_strength: float = 200.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-segment Beta priors ``(alpha, beta)`` per arm, centred on the campaign level.

    For segment ``s`` and arm ``i`` the prior mean is arm ``i``'s campaign-level posterior mean
    from the *other* segments' data (``overall - segment``, so no evidence counts twice) under
    ``base_prior`` (scalars or per-arm arrays).  The strength ``kappa`` (how many impressions the
    campaign level is worth inside one segment) is fitted by the method of moments to how much
    segment rates really scatter around their arm's campaign rate, after removing binomial
    noise, over the (segment, arm) cells with at least ``min_impressions``; clipped to
    ``[min_strength, max_strength]``, and ``default_strength`` when fewer than two cells qualify.
    An arm's prior is never stronger than the evidence behind its campaign-level mean.

    Example
    -------
    >>> overall = ArmCounts(["a", "b"], impressions=[2000, 2000], clicks=[40, 80])
    >>> thin = ArmCounts(["a", "b"], impressions=[10, 10], clicks=[1, 0])
    >>> alpha, beta = segment_priors({"thin": thin}, overall)["thin"]
    >>> bool(alpha[1] / (alpha[1] + beta[1]) > alpha[0] / (alpha[0] + beta[0]))
    True
    """
    check_objective(objective)
    if not 0 < min_strength <= default_strength <= max_strength:
        raise InvalidConfigError(
            "need 0 < min_strength <= default_strength <= max_strength, got "
            f"{min_strength!r}, {default_strength!r}, {max_strength!r}"
        )
    n_arms = overall.n_arms
    alpha0 = np.broadcast_to(np.asarray(base_prior[0], dtype=np.float64), (n_arms,))
    beta0 = np.broadcast_to(np.asarray(base_prior[1], dtype=np.float64), (n_arms,))
    successes_all = overall.successes(objective)
    means: dict[str, np.ndarray] = {}
    evidence: dict[str, np.ndarray] = {}
    residuals: list[np.ndarray] = []
    noise: list[np.ndarray] = []
    for name, counts in segment_counts.items():
        if counts.arm_ids != overall.arm_ids:
            raise InvalidCountsError(
                f"segment {name!r} arm_ids differ from the campaign's; align them first"
            )
        rest_trials = np.maximum(overall.impressions - counts.impressions, 0.0)
        rest_successes = np.clip(successes_all - counts.successes(objective), 0.0, rest_trials)
        mean = (alpha0 + rest_successes) / (alpha0 + beta0 + rest_trials)
        means[name] = mean
        evidence[name] = alpha0 + beta0 + rest_trials
        cell = counts.impressions >= min_impressions
        if cell.any():
            trials = counts.impressions[cell]
            rates = np.minimum(counts.successes(objective)[cell], trials) / trials
            residuals.append((rates - mean[cell]) ** 2)
            noise.append(mean[cell] * (1.0 - mean[cell]) / trials)
    n_cells = sum(len(r) for r in residuals)
    if n_cells < 2:
        strength = default_strength
    else:
        scatter = np.concatenate(residuals)
        expected_noise = np.concatenate(noise)
        between = scatter.mean() - expected_noise.mean()
        all_means = np.concatenate(list(means.values()))
        spread = float(np.mean(all_means * (1.0 - all_means)))
        strength = max_strength if between <= 0 else spread / between - 1.0
        strength = float(np.clip(strength, min_strength, max_strength))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, mean in means.items():
        kappa = np.minimum(strength, evidence[name])
        out[name] = (np.maximum(mean * kappa, 1e-6), np.maximum((1.0 - mean) * kappa, 1e-6))
    return out
