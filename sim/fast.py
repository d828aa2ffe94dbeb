"""Fast mode: a vectorized, policy-only simulator for comparisons and sweeps over many seeds.

No storage, no text: each simulated problem is a vector of true arm CTRs and a horizon of
impressions. All problems advance together in ``n_updates`` batches; within a batch the
policy's weights are fixed (batched, delayed feedback, as in production where the posterior
snapshot is refreshed every few seconds), the batch is split across arms exactly by the weights
(allocation *in distribution*), and clicks for the posterior are drawn from the binomial of the
integer-rounded allocation. Reported clicks are *expected* clicks given the allocation
(``sum impressions * true CTR``): the same quantity the regret is measured in, with the
click-level noise removed so that policy differences show with fewer runs.

Policies (same names and meaning as in :mod:`adloop.bandits`):

``ts``       Thompson sampling in distribution: each arm's weight is its posterior probability
             of being best (Beta-Bernoulli, Monte Carlo with ``n_draws`` draws), computed for
             all problems at once by :func:`~adloop.bandits.batch_thompson_weights`; optional
             ``floor``.
``uniform``  equal split for the whole horizon (a fixed-horizon A/B test).
``ucb1``     all of the batch to the arm with the highest UCB1 index (ties split).
``egreedy``  ``1 - epsilon`` to the best empirical mean, ``epsilon`` spread evenly.

Problems may have different numbers of arms: pad ``ctr`` with ``nan`` for missing arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adloop.bandits import batch_thompson_weights
from adloop.sim.errors import SimError

__all__ = ["POLICIES", "BatchedRun", "FastResult", "simulate", "simulate_batched"]

POLICIES: tuple[str, ...] = ("ts", "uniform", "ucb1", "egreedy")


@dataclass(frozen=True)
class BatchedRun:
    """Outcome of :func:`simulate_batched` for ``S`` problems with up to ``K`` arms.

    Attributes
    ----------
    impressions:
        Impressions given to each arm, shape (S, K) (fractional: allocation in distribution).
    clicks:
        Expected clicks per problem, ``sum_k impressions * ctr``, shape (S,).
    observed_clicks:
        Clicks drawn for the posterior updates, shape (S, K).
    oracle_clicks:
        ``horizon * max ctr`` per problem, shape (S,).
    regret_history:
        Cumulative regret after each update, shape (S, n_updates), or ``None``.
    share_history:
        Traffic share per arm in each batch, shape (n_updates, S, K), or ``None``.
    """

    impressions: np.ndarray
    clicks: np.ndarray
    observed_clicks: np.ndarray
    oracle_clicks: np.ndarray
    regret_history: np.ndarray | None
    share_history: np.ndarray | None

    @property
    def regret(self) -> np.ndarray:
        """Oracle clicks minus the policy's expected clicks, per problem."""
        return self.oracle_clicks - self.clicks


def _check_policy(policy: str, floor: float, epsilon: float, n_draws: int) -> None:
    if policy not in POLICIES:
        raise SimError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if not (0.0 <= floor < 1.0):
        raise SimError(f"floor must be in [0, 1), got {floor!r}")
    if not (0.0 <= epsilon <= 1.0):
        raise SimError(f"epsilon must be in [0, 1], got {epsilon!r}")
    if n_draws < 1:
        raise SimError(f"n_draws must be >= 1, got {n_draws!r}")


def _argmax_split(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One-hot weights on the highest score per row, split evenly among exact ties."""
    scores = np.where(valid, scores, -np.inf)
    best = scores == scores.max(axis=1, keepdims=True)
    best &= valid
    return best / best.sum(axis=1, keepdims=True)


def _weights(
    policy: str,
    impressions: np.ndarray,
    clicks: np.ndarray,
    valid: np.ndarray,
    n_valid: np.ndarray,
    *,
    prior_alpha: np.ndarray,
    prior_beta: np.ndarray,
    floor: float,
    epsilon: float,
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    uniform = valid / n_valid[:, None]
    if policy == "uniform":
        return uniform
    if policy == "ts":
        alpha = prior_alpha + clicks
        beta = prior_beta + np.maximum(impressions - clicks, 0.0)
        return batch_thompson_weights(
            alpha, beta, rng=rng, n_draws=n_draws, floor=floor, active=valid
        )
    means = np.divide(clicks, impressions, out=np.zeros_like(clicks), where=impressions > 0)
    if policy == "egreedy":
        untried = valid & (impressions == 0)
        greedy = np.where(untried.any(axis=1, keepdims=True),
                          _argmax_split(untried.astype(float), valid),
                          _argmax_split(means, valid))  # fmt: skip
        return (1.0 - epsilon) * greedy + epsilon * uniform
    # ucb1: untried arms first, then mean + sqrt(2 ln n / n_k)
    total = impressions.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bonus = np.sqrt(2.0 * np.log(np.maximum(total, 1.0)) / impressions)
    index = np.where(impressions > 0, means + bonus, np.inf)
    return _argmax_split(index, valid)


def simulate_batched(
    ctr: np.ndarray,
    horizons: np.ndarray | Sequence[int],
    *,
    policy: str = "ts",
    n_updates: int = 100,
    rng: np.random.Generator | int | None = None,
    floor: float = 0.0,
    epsilon: float = 0.1,
    n_draws: int = 128,
    prior_alpha: float | np.ndarray = 1.0,
    prior_beta: float | np.ndarray = 1.0,
    record_history: bool = False,
) -> BatchedRun:
    """Run one policy on ``S`` independent Bernoulli problems at once.

    Parameters
    ----------
    ctr:
        True click rates, shape (S, K); ``nan`` marks a missing arm (problems with fewer arms).
    horizons:
        Impressions per problem, shape (S,).
    policy:
        ``"ts"``, ``"uniform"``, ``"ucb1"`` or ``"egreedy"``.
    n_updates:
        Posterior updates per problem: the horizon is cut into this many equal batches.
    rng:
        A ``numpy.random.Generator`` or a seed.
    floor, n_draws:
        Thompson-sampling settings (minimum share per arm, Monte Carlo draws).
    epsilon:
        Exploration rate of ``egreedy``.
    prior_alpha, prior_beta:
        Beta prior of Thompson sampling: scalars, or arrays of shape (S,) or (S, K)
        (e.g. an empirical-Bayes prior learned from other problems).
    record_history:
        Keep cumulative regret and traffic shares per update (for plots).

    Example
    -------
    >>> run = simulate_batched(np.array([[0.02, 0.03]]), [10_000], policy="uniform", rng=0)
    >>> float(run.clicks[0]), float(run.oracle_clicks[0])
    (250.0, 300.0)
    """
    _check_policy(policy, floor, epsilon, n_draws)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ctr = np.atleast_2d(np.asarray(ctr, dtype=float))
    horizons = np.asarray(horizons, dtype=np.int64).reshape(-1)
    if horizons.shape[0] != ctr.shape[0]:
        raise SimError(f"{ctr.shape[0]} problems but {horizons.shape[0]} horizons")
    if np.any(horizons < 0):
        raise SimError("horizons must be non-negative")
    if n_updates < 1:
        raise SimError(f"n_updates must be >= 1, got {n_updates!r}")
    valid = ~np.isnan(ctr)
    n_valid = valid.sum(axis=1)
    if np.any(n_valid == 0):
        raise SimError("every problem needs at least one arm")
    truth = np.where(valid, ctr, 0.0)
    if np.any((truth < 0) | (truth > 1)):
        raise SimError("true CTRs must lie in [0, 1]")
    shape = ctr.shape
    prior_alpha = np.broadcast_to(
        np.asarray(prior_alpha, dtype=float).reshape(-1, 1)
        if np.ndim(prior_alpha) == 1 else np.asarray(prior_alpha, dtype=float), shape)  # fmt: skip
    prior_beta = np.broadcast_to(
        np.asarray(prior_beta, dtype=float).reshape(-1, 1)
        if np.ndim(prior_beta) == 1 else np.asarray(prior_beta, dtype=float), shape)  # fmt: skip
    if np.any(prior_alpha <= 0) or np.any(prior_beta <= 0):
        raise SimError("prior_alpha and prior_beta must be > 0")

    impressions = np.zeros(shape)  # integer-valued: what the posterior has seen
    observed = np.zeros(shape)
    allocated = np.zeros(shape)  # fractional: what the policy allocated
    best = truth.max(axis=1)
    regret_history = np.empty((shape[0], n_updates)) if record_history else None
    share_history = np.empty((n_updates,) + shape) if record_history else None
    done = np.zeros(shape[0], dtype=np.int64)
    for step in range(n_updates):
        target = horizons * (step + 1) // n_updates
        batch = (target - done).astype(float)
        done = target
        weights = _weights(
            policy, impressions, observed, valid, n_valid,
            prior_alpha=prior_alpha, prior_beta=prior_beta, floor=floor,
            epsilon=epsilon, n_draws=n_draws, rng=rng,
        )  # fmt: skip
        share = batch[:, None] * weights
        allocated += share
        # Stochastic rounding keeps the posterior's impressions unbiased for the allocation.
        shown = np.floor(share + rng.random(shape))
        observed += rng.binomial(shown.astype(np.int64), truth)
        impressions += shown
        if regret_history is not None:
            regret_history[:, step] = (allocated * (best[:, None] - truth)).sum(axis=1)
            share_history[step] = weights
    return BatchedRun(
        impressions=allocated,
        clicks=(allocated * truth).sum(axis=1),
        observed_clicks=observed,
        oracle_clicks=horizons * best,
        regret_history=regret_history,
        share_history=share_history,
    )


@dataclass(frozen=True)
class FastResult:
    """Many seeded runs of one policy on one problem (see :func:`simulate`)."""

    policy: str
    arm_ctr: tuple[float, ...]
    horizon: int
    n_updates: int
    seed: int
    run: BatchedRun

    def rows(self) -> list[dict[str, Any]]:
        """One plain row per simulated run (for a polars DataFrame)."""
        return [
            {
                "policy": self.policy,
                "run": index,
                "horizon": self.horizon,
                "n_updates": self.n_updates,
                "clicks": float(self.run.clicks[index]),
                "oracle_clicks": float(self.run.oracle_clicks[index]),
                "regret": float(self.run.regret[index]),
                "best_arm_share": float(
                    self.run.impressions[index, int(np.argmax(self.arm_ctr))] / max(self.horizon, 1)
                ),
            }
            for index in range(self.run.clicks.shape[0])
        ]

    def summary(self) -> dict[str, Any]:
        """Mean and standard error of clicks and regret over the runs."""
        n_runs = self.run.clicks.shape[0]
        regret = self.run.regret
        return {
            "policy": self.policy,
            "runs": n_runs,
            "horizon": self.horizon,
            "n_updates": self.n_updates,
            "seed": self.seed,
            "mean_clicks": float(self.run.clicks.mean()),
            "mean_regret": float(regret.mean()),
            "regret_stderr": float(regret.std(ddof=1) / np.sqrt(n_runs)) if n_runs > 1 else 0.0,
            "oracle_clicks": float(self.run.oracle_clicks[0]),
        }


def simulate(
    arm_ctr: Sequence[float],
    *,
    policy: str = "ts",
    horizon: int = 100_000,
    n_updates: int = 100,
    n_runs: int = 100,
    seed: int = 0,
    record_history: bool = False,
    **settings: Any,
) -> FastResult:
    """Run ``n_runs`` seeded simulations of one policy on one Bernoulli problem.

    Parameters
    ----------
    arm_ctr:
        True CTR of each arm.
    policy:
        ``"ts"``, ``"uniform"``, ``"ucb1"`` or ``"egreedy"``.
    horizon:
        Impressions per run.
    n_updates:
        Batched posterior updates per run.
    n_runs:
        Independent runs, simulated together.
    seed:
        Seed of the whole sweep; same seed, same result.
    settings:
        Policy settings passed to :func:`simulate_batched` (``floor``,
        ``epsilon``, ``n_draws``, ``prior_alpha``, ``prior_beta``).

    Example
    -------
    >>> result = simulate([0.05, 0.045, 0.04], policy="ts", horizon=50_000, n_runs=20, seed=1)
    >>> result.summary()["mean_regret"] < simulate(
    ...     [0.05, 0.045, 0.04], policy="uniform", horizon=50_000, n_runs=20, seed=1
    ... ).summary()["mean_regret"]
    True
    """
    if n_runs < 1:
        raise SimError(f"n_runs must be >= 1, got {n_runs!r}")
    arms = np.asarray(arm_ctr, dtype=float)
    run = simulate_batched(
        np.broadcast_to(arms, (n_runs, arms.size)).copy(),
        np.full(n_runs, horizon),
        policy=policy,
        n_updates=n_updates,
        rng=np.random.default_rng(seed),
        record_history=record_history,
        **settings,
    )
    return FastResult(
        policy=policy,
        arm_ctr=tuple(float(x) for x in arms),
        horizon=int(horizon),
        n_updates=int(n_updates),
        seed=int(seed),
        run=run,
    )
