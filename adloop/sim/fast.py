"""Fast mode: a vectorized, policy-only simulator for comparisons and sweeps over many seeds.

No storage, no text: each simulated problem is a vector of true arm CTRs and a horizon of
impressions. All problems advance together in ``n_updates`` batches; within a batch the
policy's weights are fixed (batched, delayed feedback, as in production where the posterior
snapshot is refreshed every few seconds), the batch is split across arms exactly by the weights
(allocation *in distribution*), and clicks for the posterior are drawn from the binomial of the
integer-rounded allocation. Reported clicks are *expected* clicks given the allocation
(``sum impressions * true CTR``): the same quantity the regret is measured in, with the
click-level noise removed so that policy differences show with fewer runs.

The policies are the engine's own (:data:`adloop.bandits.POLICIES`, the names
``EngineConfig.policy`` takes), run for all problems at once through their ``batch_weights``:

``ts``       :class:`~adloop.bandits.ThompsonSampling` with the engine's defaults (empirical-Bayes
             prior for arms behind the others, practically-tied rule), ``n_draws`` Monte Carlo
             draws; an explicit ``prior_alpha``/``prior_beta`` replaces its prior.
             A :class:`~adloop.bandits.TextPriorThompson` object with ``text`` evidence adds a
             copy scorer's prediction to each arm's prior.
``uniform``  :class:`~adloop.bandits.Uniform`: equal split for the whole horizon.
``ucb1``     :class:`~adloop.bandits.UCB1`: the batch to the highest UCB1 index (ties split).
``egreedy``  :class:`~adloop.bandits.EpsilonGreedy`: ``1 - epsilon`` to the best empirical
             mean, ``epsilon`` spread evenly.

A :class:`~adloop.bandits.Policy` object may be passed instead of a name. Problems may have
different numbers of arms: pad ``ctr`` with ``nan`` for missing arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adloop.bandits import (
    POLICIES,
    BanditError,
    Policy,
    TextEvidence,
    TextPriorThompson,
    ThompsonSampling,
)
from adloop.sim.errors import SimError

__all__ = ["POLICIES", "BatchedRun", "FastResult", "make_policy", "simulate", "simulate_batched"]


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


def make_policy(
    name: str, *, floor: float = 0.0, epsilon: float = 0.1, n_draws: int = 128
) -> Policy:
    """The engine's policy called ``name`` (a key of :data:`POLICIES`) with these settings.

    ``floor`` applies to every policy, ``epsilon`` to ``egreedy``, ``n_draws`` to ``ts``.

    >>> make_policy("egreedy", epsilon=0.2)
    EpsilonGreedy(objective='ctr', floor=0.0, seed=None, epsilon=0.2)
    """
    if name not in POLICIES:
        raise SimError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    settings: dict[str, Any] = {"floor": floor}
    if name == "ts":
        settings["n_draws"] = n_draws
    elif name == "egreedy":
        settings["epsilon"] = epsilon
    try:
        return POLICIES[name](**settings)
    except BanditError as error:
        raise SimError(f"policy {name!r}: {error}") from error


def simulate_batched(
    ctr: np.ndarray,
    horizons: np.ndarray | Sequence[int],
    *,
    policy: str | Policy = "ts",
    n_updates: int = 100,
    rng: np.random.Generator | int | None = None,
    floor: float = 0.0,
    epsilon: float = 0.1,
    n_draws: int = 128,
    prior_alpha: float | np.ndarray | None = None,
    prior_beta: float | np.ndarray | None = None,
    text: TextEvidence | None = None,
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
        A name from :data:`POLICIES` (``"ts"``, ``"uniform"``, ``"ucb1"``, ``"egreedy"``) or a
        :class:`~adloop.bandits.Policy` object (then ``floor``, ``epsilon`` and ``n_draws`` are
        its own).
    n_updates:
        Posterior updates per problem: the horizon is cut into this many equal batches.
    rng:
        A ``numpy.random.Generator`` or a seed.
    floor:
        Minimum traffic share of every arm.
    n_draws:
        Monte Carlo draws of Thompson sampling.
    epsilon:
        Exploration rate of ``egreedy``.
    prior_alpha, prior_beta:
        An explicit Beta prior for Thompson sampling, replacing its own: scalars, or arrays of
        shape (S,) or (S, K) (e.g. a prior learned from other problems).
    text:
        A copy scorer's calibrated evidence per arm, offsets of shape (S, K) (see
        :class:`~adloop.bandits.TextEvidence`), for a
        :class:`~adloop.bandits.TextPriorThompson` policy: added to each arm's prior at every
        update, around the problem's running rate.
    record_history:
        Keep cumulative regret and traffic shares per update (for plots).

    Example
    -------
    >>> run = simulate_batched(np.array([[0.02, 0.03]]), [10_000], policy="uniform", rng=0)
    >>> float(run.clicks[0]), float(run.oracle_clicks[0])
    (250.0, 300.0)
    """
    if isinstance(policy, str):
        policy = make_policy(policy, floor=floor, epsilon=epsilon, n_draws=n_draws)
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
    if not valid.any(axis=1).all():
        raise SimError("every problem needs at least one arm")
    truth = np.where(valid, ctr, 0.0)
    if np.any((truth < 0) | (truth > 1)):
        raise SimError("true CTRs must lie in [0, 1]")
    settings: dict[str, Any] = {}
    if (prior_alpha is None) != (prior_beta is None):
        raise SimError("give both prior_alpha and prior_beta, or neither")
    if prior_alpha is not None:
        if not isinstance(policy, ThompsonSampling):
            raise SimError(f"prior_alpha/prior_beta apply to Thompson sampling, not {policy!r}")
        settings["prior"] = (prior_alpha, prior_beta)
    if text is not None:
        if not isinstance(policy, TextPriorThompson):
            raise SimError(f"text evidence applies to TextPriorThompson, not {policy!r}")
        if text.offsets.shape != ctr.shape:
            raise SimError(f"text offsets have shape {text.offsets.shape}, ctr {ctr.shape}")
        settings["text"] = text
    shape = ctr.shape
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
        try:
            weights = policy.batch_weights(impressions, observed, active=valid, rng=rng, **settings)
        except BanditError as error:
            raise SimError(str(error)) from error
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
        A name from :data:`POLICIES`: ``"ts"``, ``"uniform"``, ``"ucb1"`` or ``"egreedy"``.
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
