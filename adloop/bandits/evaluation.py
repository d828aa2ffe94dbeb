"""Regret of a policy on a Bernoulli problem with batched updates, and the Lai-Robbins bound.

This is a measuring stick for policies (tests and benchmarks), not the simulator: it knows
nothing of campaigns, text or storage.  Regret is the pseudo-regret
``sum_i n_i * (mu_star - mu_i)`` of the impressions actually allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .counts import ArmCounts
from .errors import InvalidConfigError

__all__ = ["bernoulli_kl", "lai_robbins_bound", "RegretRun", "bernoulli_regret"]


def bernoulli_kl(p: float | np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """``KL(Bernoulli(p) || Bernoulli(q))`` in nats.

    >>> round(float(bernoulli_kl(0.045, 0.05)), 6)
    0.000272
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-15, 1 - 1e-15)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def lai_robbins_bound(means: np.ndarray, horizon: float) -> float:
    """Asymptotic lower bound on regret: ``sum_i Delta_i / KL(mu_i, mu_star) * ln T``.

    >>> round(lai_robbins_bound(np.array([0.05, 0.045]), 1e6))
    254
    """
    means = np.asarray(means, dtype=np.float64)
    best = means.max()
    gaps = best - means
    worse = gaps > 0
    return float(np.sum(gaps[worse] / bernoulli_kl(means[worse], best)) * np.log(horizon))


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class RegretRun:
    """Cumulative pseudo-regret after each batch, and the final impressions per arm."""

    regret: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray

    @property
    def final_regret(self) -> float:
        return float(self.regret[-1])


def bernoulli_regret(
    policy: object,
    means: np.ndarray,
    *,
    horizon: int,
    batch_size: int,
    seed: int,
) -> RegretRun:
    """Run ``policy`` (anything with ``weights(counts, rng)``) on Bernoulli arms.

    Each batch, the policy's weights split ``batch_size`` impressions (multinomial), clicks are
    drawn per arm (binomial) and the counts updated: delayed, batched feedback as from an ad
    server.  One generator seeded with ``seed`` drives both the policy and the world.

    >>> from adloop.bandits import ThompsonSampling
    >>> run = bernoulli_regret(ThompsonSampling(), np.array([0.05, 0.04]), horizon=10_000,
    ...                        batch_size=1_000, seed=0)
    >>> run.regret.shape
    (10,)
    """
    means = np.asarray(means, dtype=np.float64)
    if horizon < batch_size or batch_size < 1:
        raise InvalidConfigError(
            f"need 1 <= batch_size <= horizon, got {batch_size!r} and {horizon!r}"
        )
    rng = np.random.default_rng(seed)
    n_arms = len(means)
    arm_ids = tuple(f"arm{i}" for i in range(n_arms))
    gaps = means.max() - means
    impressions = np.zeros(n_arms)
    clicks = np.zeros(n_arms)
    n_batches = horizon // batch_size
    regret = np.empty(n_batches)
    total = 0.0
    for step in range(n_batches):
        weights = policy.weights(ArmCounts(arm_ids, impressions, clicks), rng)  # type: ignore[attr-defined]
        shown = rng.multinomial(batch_size, weights)
        clicks += rng.binomial(shown, means)
        impressions += shown
        total += float(shown @ gaps)
        regret[step] = total
    return RegretRun(regret, impressions, clicks)
