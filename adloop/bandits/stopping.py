"""Winner declaration, retirement of clear losers, and the fixed-horizon z-test.

The winner rule is the conjunction of two Bayesian criteria over the active arms:

1. the leading arm's posterior probability of being best is at least ``threshold``; and
2. Scott's (2015) *value remaining*: over posterior draws, the ``quantile`` (default 95th
   percentile) of ``(theta_max - theta_best) / theta_best`` is below ``value_remaining``
   (default 1 %): switching away from the leader is very unlikely to gain more than 1 %.

When ``threshold >= quantile`` the second criterion follows from the first (95 % of draws have
zero loss), so it bites only with a laxer threshold; it is kept explicit so both are reported.
A declaration at a threshold ``t`` is a Bayesian statement: under an A/A test evaluated once,
each arm reaches probability-best ``t`` with frequency about ``1 - t``; the events are disjoint,
so with ``K`` active arms some arm would be declared up to ``K (1 - t)`` of the time.  By default
(``familywise=True``) the leader must therefore reach ``1 - (1 - t) / K``, which holds the A/A
rate of *any* declaration at the nominal ``1 - t`` (a Bonferroni split over the arms).
Monitoring continuously inflates that; set ``min_impressions`` to the planned sample, or raise
``threshold``, when looks are frequent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .counts import ArmCounts
from .errors import InvalidConfigError, NoActiveArmsError
from .posterior import posterior, probability_best_from_draws

__all__ = [
    "WinnerDecision",
    "ZTestResult",
    "decide_winner",
    "planned_sample_size",
    "retire_candidates",
    "two_proportion_z_test",
]


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class WinnerDecision:
    """Outcome of :func:`decide_winner`.

    ``winner``: index of the declared winner, or ``None``.
    ``probability_best``: per arm (0 for inactive arms).
    ``expected_loss``: per arm, ``E[theta_max - theta_arm]`` in the objective's units (NaN for
    inactive arms) — what choosing that arm now is expected to cost per impression.
    ``value_remaining``: the ``quantile`` of the relative value remaining of the leading arm.
    ``reason``: a sentence saying why it was or was not declared.
    ``best``: index of the leading arm (highest probability-best), declared or not.
    """

    winner: int | None
    probability_best: np.ndarray
    expected_loss: np.ndarray
    value_remaining: float
    reason: str
    best: int = -1


def _draws(counts, objective, prior, n_draws, rng):
    active_index = np.flatnonzero(counts.active)
    if len(active_index) == 0:
        raise NoActiveArmsError("no active arm to evaluate")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    post = posterior(counts, objective, prior=prior).subset(active_index)
    return active_index, post.sample(n_draws, generator)


def decide_winner(
    counts: ArmCounts,
    *,
    objective: str = "ctr",
    threshold: float = 0.95,
    value_remaining: float = 0.01,
    quantile: float = 0.95,
    min_impressions: float = 0.0,
    n_draws: int = 10_000,
    prior: tuple[float, float] | None = None,
    familywise: bool = True,
    rng: np.random.Generator | int | None = None,
) -> WinnerDecision:
    """Declare a winner when probability-best and value remaining both say so.

    Example
    -------
    >>> counts = ArmCounts(["a", "b"], impressions=[20000, 20000], clicks=[400, 600])
    >>> decision = decide_winner(counts, rng=0)
    >>> decision.winner, decision.probability_best.round(2).tolist()
    (1, [0.0, 1.0])
    """
    if not 0 < threshold <= 1:
        raise InvalidConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    if not value_remaining > 0:
        raise InvalidConfigError(f"value_remaining must be > 0, got {value_remaining!r}")
    if not 0 < quantile < 1:
        raise InvalidConfigError(f"quantile must be in (0, 1), got {quantile!r}")
    if not isinstance(n_draws, int | np.integer) or n_draws < 100:
        raise InvalidConfigError(f"n_draws must be an integer >= 100, got {n_draws!r}")
    active_index, draws = _draws(counts, objective, prior, int(n_draws), rng)
    share = probability_best_from_draws(draws)
    leader = int(np.argmax(share))
    maxima = draws.max(axis=1)
    loss = maxima[:, None] - draws
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(draws[:, leader] > 0, loss[:, leader] / draws[:, leader], np.inf)
    remaining = float(np.quantile(relative, quantile))
    probability_best = np.zeros(counts.n_arms)
    probability_best[active_index] = share
    expected_loss = np.full(counts.n_arms, np.nan)
    expected_loss[active_index] = loss.mean(axis=0)
    best = int(active_index[leader])
    thin = counts.impressions[active_index].min() < min_impressions
    if familywise:
        threshold = 1 - (1 - threshold) / len(active_index)
    if len(active_index) == 1:
        return WinnerDecision(
            best, probability_best, expected_loss, 0.0, "only one active arm", best
        )
    if thin:
        reason = f"not yet: an active arm has fewer than {min_impressions:g} impressions"
        winner = None
    elif share[leader] < threshold:
        reason = f"not yet: probability best {share[leader]:.3f} < {threshold:.4g}"
        winner = None
    elif remaining >= value_remaining:
        reason = (
            f"not yet: value remaining {remaining:.4f} >= {value_remaining} "
            f"at the {quantile:.0%} quantile"
        )
        winner = None
    else:
        reason = (
            f"arm {counts.arm_ids[best]!r} wins: probability best {share[leader]:.3f} >= "
            f"{threshold:.4g} and value remaining {remaining:.4f} < {value_remaining}"
        )
        winner = best
    return WinnerDecision(winner, probability_best, expected_loss, remaining, reason, best)


def retire_candidates(
    counts: ArmCounts,
    *,
    objective: str = "ctr",
    floor: float = 0.01,
    min_impressions: float = 1000.0,
    n_draws: int = 10_000,
    prior: tuple[float, float] | None = None,
    rng: np.random.Generator | int | None = None,
) -> list[int]:
    """Indices of active arms that are clear losers: probability-best below ``floor`` after at
    least ``min_impressions`` impressions.  The leading arm is never returned.

    >>> counts = ArmCounts(["a", "b", "c"], impressions=[5000] * 3, clicks=[50, 150, 160])
    >>> retire_candidates(counts, rng=0)
    [0]
    """
    if not 0 <= floor < 1:
        raise InvalidConfigError(f"floor must be in [0, 1), got {floor!r}")
    if not min_impressions >= 0:
        raise InvalidConfigError(f"min_impressions must be >= 0, got {min_impressions!r}")
    active_index, draws = _draws(counts, objective, prior, int(n_draws), rng)
    share = probability_best_from_draws(draws)
    leader = int(np.argmax(share))
    return [
        int(arm)
        for position, arm in enumerate(active_index)
        if position != leader
        and share[position] < floor
        and counts.impressions[arm] >= min_impressions
    ]


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class ZTestResult:
    """Outcome of a fixed-horizon test: best observed arm against every other active arm.

    ``winner`` is the best arm's index when every comparison is significant at the
    Bonferroni-corrected level ``alpha / (n_active - 1)``, else ``None``.
    ``z`` and ``p_values`` are per arm (NaN for the best arm itself and inactive arms).
    """

    winner: int | None
    best: int
    z: np.ndarray
    p_values: np.ndarray
    alpha: float


def two_proportion_z_test(
    successes_a: float, trials_a: float, successes_b: float, trials_b: float
) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``rate_a == rate_b``; returns ``(z, two-sided p)``.

    >>> z, p = two_proportion_z_test(60, 1000, 30, 1000)
    >>> round(z, 2), p < 0.01
    (3.24, True)
    """
    if trials_a <= 0 or trials_b <= 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b)
    if variance <= 0:
        return 0.0, 1.0
    z = (successes_a / trials_a - successes_b / trials_b) / np.sqrt(variance)
    return float(z), float(2.0 * stats.norm.sf(abs(z)))


def planned_sample_size(
    baseline_rate: float,
    minimum_detectable_effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    n_arms: int = 2,
) -> int:
    """Impressions per arm a fixed-horizon test needs to detect an absolute lift.

    Uses the usual normal approximation for two proportions, with ``alpha`` split
    (Bonferroni) over the ``n_arms - 1`` comparisons against the best arm.

    >>> planned_sample_size(0.05, 0.01)
    8158
    """
    if not 0 < baseline_rate < 1 or not 0 < baseline_rate + minimum_detectable_effect < 1:
        raise InvalidConfigError(
            f"baseline_rate and baseline_rate + minimum_detectable_effect must be in (0, 1), got "
            f"{baseline_rate!r}, {minimum_detectable_effect!r}"
        )
    if minimum_detectable_effect == 0:
        raise InvalidConfigError("minimum_detectable_effect must be non-zero")
    comparisons = max(n_arms - 1, 1)
    z_alpha = stats.norm.isf(alpha / comparisons / 2.0)
    z_power = stats.norm.ppf(power)
    p1, p2 = baseline_rate, baseline_rate + minimum_detectable_effect
    mean = (p1 + p2) / 2.0
    numerator = z_alpha * np.sqrt(2 * mean * (1 - mean)) + z_power * np.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return int(np.ceil((numerator / minimum_detectable_effect) ** 2))
