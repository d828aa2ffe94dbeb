"""Allocation policies: Thompson sampling and the baselines people compare it with.

Every policy has the same small surface (public verb, private hook):

* ``weights(counts, rng=None) -> np.ndarray`` — traffic share per arm, summing to 1, zero for
  inactive (retired) arms, at least ``floor`` for every active arm;
* ``snapshot(counts, rng=None) -> Snapshot`` — the same weights frozen for O(log K) decisions;
* ``batch_weights(impressions, successes, active=None, rng=None)`` — the same allocation for
  many independent problems at once, arrays shaped ``(n_problems, n_arms)`` (the fast simulator
  and the replay of archived tests run the engine's policy through it);
* subclasses fill in one vectorised hook, ``_batch_shares``; :class:`ThompsonSampling` also
  overrides ``_weights`` (one campaign's posterior may hold conversion values, segment priors).

:data:`POLICIES` maps the names a configuration uses (``"ts"``, ``"uniform"``, ``"egreedy"``,
``"ucb1"``) to these classes.

Policies hold no evidence: state is rebuilt from aggregated counts each time (storage is the
source of truth), so a restart or a replay gives the same allocation.  Constructor arguments
are the configuration and are checked at construction.
"""

from __future__ import annotations

import numpy as np

from .batch import (
    _argmax_split_rows,
    _empirical_means,
)
from .counts import ArmCounts
from .errors import InvalidConfigError, NoActiveArmsError
from .policy import Policy, _check_fraction
from .stopping import ZTestResult, two_proportion_z_test
from .thompson import ThompsonSampling

__all__ = [
    "POLICIES",
    "Policy",
    "ThompsonSampling",
    "Uniform",
    "EpsilonGreedy",
    "UCB1",
]


class Uniform(Policy):
    """Fixed-horizon A/B(/n) test: equal split, then a two-proportion z-test, then exploit.

    Until every active arm has ``planned_impressions`` (or forever when it is ``None``) traffic
    is split equally.  Then :meth:`test` compares the best observed arm with each other arm
    (two-proportion z-test, Bonferroni-corrected ``alpha``); all traffic goes to the winner, or to
    the best observed arm when nothing is significant (what teams ship in practice).

    >>> policy = Uniform(planned_impressions=1000)
    >>> policy.weights(ArmCounts(["a", "b"], impressions=[10, 10], clicks=[1, 0])).tolist()
    [0.5, 0.5]
    """

    def __init__(
        self,
        objective: str = "ctr",
        *,
        planned_impressions: int | None = None,
        alpha: float = 0.05,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(objective=objective, floor=floor, seed=seed)
        if planned_impressions is not None and not planned_impressions > 0:
            raise InvalidConfigError(
                f"planned_impressions must be > 0 or None, got {planned_impressions!r}"
            )
        if planned_impressions is not None and objective == "value":
            raise InvalidConfigError(
                "objective='value' has no two-proportion test; use planned_impressions=None"
            )
        self.planned_impressions = planned_impressions
        if not 0 < alpha < 1:
            raise InvalidConfigError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)

    def test(self, counts: ArmCounts) -> ZTestResult:
        """Best observed active arm against each other active arm."""
        active_index = np.flatnonzero(counts.active)
        if len(active_index) == 0:
            raise NoActiveArmsError("no active arm to test")
        successes = counts.successes(self.objective)
        trials = counts.impressions
        rates = np.where(trials > 0, successes / np.maximum(trials, 1e-300), -np.inf)
        best = int(active_index[np.argmax(rates[active_index])])
        z = np.full(counts.n_arms, np.nan)
        p_values = np.full(counts.n_arms, np.nan)
        for j in active_index:
            if j != best:
                z[j], p_values[j] = two_proportion_z_test(
                    successes[best], trials[best], successes[j], trials[j]
                )
        level = self.alpha / max(len(active_index) - 1, 1)
        others = active_index[active_index != best]
        significant = len(others) > 0 and bool(np.all((p_values[others] < level) & (z[others] > 0)))
        return ZTestResult(best if significant else None, best, z, p_values, self.alpha)

    def _batch_shares(self, impressions, successes, active, rng):
        equal = active.astype(np.float64)
        if self.planned_impressions is None:
            return equal
        planned = ~np.any(active & (impressions < self.planned_impressions), axis=1)
        # After the plan the traffic goes to the best observed arm whether or not :meth:`test`
        # finds it significant (a winner is that same arm): no test is needed to allocate.
        with np.errstate(all="ignore"):
            rates = np.where(impressions > 0, successes / np.maximum(impressions, 1e-300), -np.inf)
        rates = np.where(active, rates, -np.inf)
        best = np.zeros_like(equal)
        best[np.arange(len(best)), rates.argmax(axis=1)] = 1.0
        return np.where(planned[:, None], best, equal)


class EpsilonGreedy(Policy):
    """Epsilon-greedy: ``epsilon`` of traffic uniform, the rest on the best empirical mean.

    Arms with no impressions count as best (so each is tried).  Ties split evenly.

    >>> weights = EpsilonGreedy(epsilon=0.2).weights(
    ...     ArmCounts(["a", "b"], impressions=[100, 100], clicks=[1, 5]))
    >>> weights.round(2).tolist()
    [0.1, 0.9]
    """

    def __init__(
        self,
        objective: str = "ctr",
        *,
        epsilon: float = 0.1,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(objective=objective, floor=floor, seed=seed)
        self.epsilon = _check_fraction("epsilon", epsilon)

    def _batch_shares(self, impressions, successes, active, rng):
        greedy = _argmax_split_rows(_empirical_means(impressions, successes), active)
        n_active = active.sum(axis=1, keepdims=True)
        return self.epsilon / n_active + (1.0 - self.epsilon) * greedy


class UCB1(Policy):
    """UCB1 (Auer et al. 2002): all traffic to the arm with the largest upper confidence bound.

    Index ``mean + reward_scale * sqrt(exploration * ln N / n)``; untried arms first.  In a
    batched setting the whole batch goes to the arg-max (ties split), as in batched UCB1.

    >>> UCB1().weights(ArmCounts(["a", "b"], impressions=[100, 0], clicks=[5, 0])).tolist()
    [0.0, 1.0]
    """

    def __init__(
        self,
        objective: str = "ctr",
        *,
        exploration: float = 2.0,
        reward_scale: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(objective=objective, floor=floor, seed=seed)
        if not exploration >= 0:
            raise InvalidConfigError(f"exploration must be >= 0, got {exploration!r}")
        if not reward_scale > 0:
            raise InvalidConfigError(f"reward_scale must be > 0, got {reward_scale!r}")
        self.exploration = float(exploration)
        self.reward_scale = float(reward_scale)

    def _batch_shares(self, impressions, successes, active, rng):
        means = _empirical_means(impressions, successes)
        total = np.maximum(np.where(active, impressions, 0.0).sum(axis=1, keepdims=True), 1.0)
        with np.errstate(all="ignore"):
            bonus = self.reward_scale * np.sqrt(
                self.exploration * np.log(total) / np.where(impressions > 0, impressions, 1.0)
            )
        index = np.where(impressions > 0, means + bonus, np.inf)
        return _argmax_split_rows(index, active)


#: The allocation policies by the name a configuration uses (``EngineConfig.policy``,
#: ``adloop sim fast --policies``); one source for the engine, the simulator and the replay.
POLICIES: dict[str, type[Policy]] = {
    "ts": ThompsonSampling,
    "uniform": Uniform,
    "egreedy": EpsilonGreedy,
    "ucb1": UCB1,
}
