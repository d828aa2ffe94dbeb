"""Posteriors for the three objectives, empirical-Bayes priors and posterior summaries.

Objectives (the campaign chooses one):

``"ctr"``
    clicks per impression; Beta-Bernoulli: ``theta ~ Beta(a + clicks, b + impressions - clicks)``.
``"cvr"``
    conversions per impression; Beta-Bernoulli on conversions.
``"value"``
    conversion value per impression, ``theta = p * m`` where ``p`` is the conversion rate per
    impression (Beta posterior as for ``"cvr"``) and ``m`` the mean value of a conversion.  Values
    of single conversions are modelled as Exponential with rate ``lambda = 1 / m`` and a conjugate
    ``Gamma(shape, rate)`` prior on ``lambda``, so ``lambda | data ~ Gamma(shape + conversions,
    rate + value_sum)``.  Why this and not a Bayesian bootstrap: the engine only stores aggregates
    per arm (counts and value sums, possibly discounted), and the bootstrap needs every single
    value; the Exponential is the maximum-entropy law for a positive quantity with a given mean,
    has a right tail as heavy as its mean allows, needs only the sum, and stays conjugate (so
    discounted float counts work).  The prior mean of ``m`` is the pooled mean value per
    conversion of all arms with ``shape = 2`` (about two conversions' worth of evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .counts import ArmCounts
from .errors import InvalidConfigError

__all__ = [
    "OBJECTIVES",
    "Posterior",
    "posterior",
    "empirical_bayes_prior",
    "posterior_summary",
    "probability_best_from_draws",
    "beta_draws",
]

OBJECTIVES = ("ctr", "cvr", "value")

# Shape of the Gamma prior on 1 / (mean value per conversion): two conversions' worth of evidence,
# the smallest integer shape for which the prior mean of the value exists.
VALUE_PRIOR_SHAPE = 2.0

# Beta posteriors with both parameters above this are sampled as normals (see Posterior.sample).
NORMAL_ABOVE = 100.0


def check_objective(objective: str) -> str:
    """Return ``objective`` if it is one of :data:`OBJECTIVES`, else raise."""
    if objective not in OBJECTIVES:
        raise InvalidConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def _prior_arrays(prior: object, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    if prior is None:
        return np.ones(n_arms), np.ones(n_arms)
    try:
        alpha, beta = prior  # type: ignore[misc]
    except (TypeError, ValueError):
        raise InvalidConfigError(f"prior must be None or (alpha, beta), got {prior!r}") from None
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_arms,)).copy()
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n_arms,)).copy()
    if not (np.all(alpha > 0) and np.all(beta > 0) and np.all(np.isfinite(alpha + beta))):
        raise InvalidConfigError(f"prior alpha and beta must be finite and > 0, got {prior!r}")
    return alpha, beta


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class Posterior:
    """Posterior parameters per arm for one objective.

    ``alpha, beta``: Beta parameters of the rate (click or conversion per impression).
    ``value_shape, value_rate``: Gamma parameters of ``1 / mean value per conversion`` (only used
    by the ``"value"`` objective).
    """

    objective: str
    alpha: np.ndarray
    beta: np.ndarray
    value_shape: np.ndarray
    value_rate: np.ndarray

    @property
    def n_arms(self) -> int:
        return len(self.alpha)

    def mean(self) -> np.ndarray:
        """Posterior mean of theta per arm."""
        rate = self.alpha / (self.alpha + self.beta)
        if self.objective != "value":
            return rate
        return rate * self.value_rate / (self.value_shape - 1.0)

    def sample(
        self, n_draws: int, rng: np.random.Generator, *, normal_above: float = NORMAL_ABOVE
    ) -> np.ndarray:
        """``(n_draws, n_arms)`` joint posterior draws of theta (arms independent).

        Beta rates whose ``alpha`` and ``beta`` both exceed ``normal_above`` are drawn from the
        moment-matched normal (skewness below ``2 / sqrt(normal_above)``, 4x cheaper); pass
        ``normal_above=np.inf`` for exact Beta draws everywhere.
        """
        draws = beta_draws(
            self.alpha[None], self.beta[None], n_draws, rng, normal_above=normal_above
        )[0]
        if self.objective == "value":
            inverse_mean = rng.gamma(self.value_shape, 1.0 / self.value_rate, size=draws.shape)
            draws /= inverse_mean
        return draws

    def subset(self, index: np.ndarray) -> Posterior:
        return Posterior(
            self.objective,
            self.alpha[index],
            self.beta[index],
            self.value_shape[index],
            self.value_rate[index],
        )


def posterior(counts: ArmCounts, objective: str = "ctr", *, prior: object = None) -> Posterior:
    """Posterior of every arm (active or not) given ``counts`` and a prior.

    ``prior`` is ``None`` (flat ``Beta(1, 1)``), ``(alpha, beta)`` scalars, or per-arm arrays.

    >>> post = posterior(ArmCounts(["a"], impressions=[10], clicks=[3]))
    >>> post.alpha.tolist(), post.beta.tolist()
    ([4.0], [8.0])
    """
    check_objective(objective)
    alpha0, beta0 = _prior_arrays(prior, counts.n_arms)
    successes = counts.successes(objective)
    # Clicks can outrun impressions while events arrive out of order: zero failures, not negative.
    failures = np.maximum(counts.impressions - successes, 0.0)
    total_conversions = counts.conversions.sum()
    pooled_value = counts.value.sum() / total_conversions if total_conversions > 0 else 0.0
    # With no value seen yet the scale is arbitrary but shared by all arms, so 1.0 is harmless.
    value_scale = pooled_value if pooled_value > 1e-9 else 1.0
    value_shape = VALUE_PRIOR_SHAPE + counts.conversions
    value_rate = value_scale * (VALUE_PRIOR_SHAPE - 1.0) + counts.value
    return Posterior(objective, alpha0 + successes, beta0 + failures, value_shape, value_rate)


def beta_draws(
    alpha: np.ndarray,
    beta: np.ndarray,
    n_draws: int,
    rng: np.random.Generator,
    *,
    normal_above: float = NORMAL_ABOVE,
    dtype: type = np.float64,
) -> np.ndarray:
    """``(n_problems, n_draws, n_arms)`` independent draws from ``Beta(alpha, beta)`` arrays.

    ``alpha`` and ``beta`` have shape ``(n_problems, n_arms)``.  Entries whose ``alpha`` and
    ``beta`` both reach ``normal_above`` are drawn from the moment-matched normal (skewness
    below ``2 / sqrt(normal_above)``, about 4x cheaper than a Beta draw), the rest exactly.
    :meth:`Posterior.sample` and the vectorised policies both draw here, so one problem drawn
    alone gets the same numbers from the same generator state in either.

    >>> draws = beta_draws(np.array([[2.0, 500.0]]), np.array([[8.0, 500.0]]), 1000,
    ...                    np.random.default_rng(0))
    >>> draws.shape, bool(abs(draws[0, :, 1].mean() - 0.5) < 0.01)
    ((1, 1000, 2), True)
    """
    n_problems, n_arms = alpha.shape
    large = (alpha >= normal_above) & (beta >= normal_above)
    if not large.any():
        return rng.beta(alpha[:, None, :], beta[:, None, :], size=(n_problems, n_draws, n_arms))
    total = alpha + beta
    mean = alpha / total
    sd = np.sqrt(alpha * beta / (total * total * (total + 1.0)))
    draws = rng.standard_normal((n_problems, n_draws, n_arms), dtype=dtype)
    draws *= sd[:, None, :].astype(dtype)
    draws += mean[:, None, :].astype(dtype)
    small = ~large
    if small.any():
        problem_index, arm_index = np.nonzero(small)
        exact = rng.beta(alpha[small], beta[small], size=(n_draws, len(problem_index)))
        draws[problem_index, :, arm_index] = exact.T
    return draws


def empirical_bayes_prior(
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    min_trials: float = 100.0,
    min_strength: float = 2.0,
    max_strength: float = 1000.0,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Beta prior fitted by the method of moments (beta-binomial) to arms with evidence.

    Only arms with at least ``min_trials`` trials contribute, so a new arm's prior comes from the
    *other* arms.  The prior mean is the pooled rate; its strength ``alpha + beta`` is
    ``mean (1 - mean) / tau2 - 1`` where ``tau2`` is the between-arm variance of the rates after
    removing the binomial sampling noise, clipped to ``[min_strength, max_strength]`` (arms that
    look identical give the maximum strength; fewer than two qualifying arms give the minimum;
    none gives the flat ``(1, 1)``).

    ``successes`` and ``trials`` have shape ``(n_arms,)`` (returns two floats) or
    ``(n_problems, n_arms)``: one independent fit per row (returns two ``(n_problems,)`` arrays).

    >>> alpha, beta = empirical_bayes_prior(np.array([20, 30, 40]), np.array([1000, 1000, 1000]))
    >>> round(alpha / (alpha + beta), 3)
    0.03
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if not 0 < min_strength <= max_strength:
        raise InvalidConfigError(
            f"need 0 < min_strength <= max_strength, got {min_strength!r}, {max_strength!r}"
        )
    if successes.shape != trials.shape or successes.ndim not in (1, 2):
        raise InvalidConfigError(
            f"successes {successes.shape} and trials {trials.shape} must share a 1-d or 2-d shape"
        )
    single = successes.ndim == 1
    successes, trials = np.atleast_2d(successes), np.atleast_2d(trials)
    used = trials >= min_trials
    n_used = used.sum(axis=1)
    s = np.where(used, np.minimum(successes, trials), 0.0)
    n = np.where(used, trials, 0.0)
    mean = (s.sum(axis=1) + 0.5) / (n.sum(axis=1) + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(used, s / np.where(used, n, 1.0), 0.0)
        deviations = np.where(used, (rates - mean[:, None]) ** 2, 0.0)
        observed = deviations.sum(axis=1) / (n_used - 1)
        sampling = (
            mean
            * (1.0 - mean)
            * np.where(used, 1.0 / np.where(used, n, 1.0), 0.0).sum(axis=1)
            / n_used
        )
        between = observed - sampling
        fitted = np.clip(mean * (1.0 - mean) / between - 1.0, min_strength, max_strength)
    strength = np.where(n_used < 2, min_strength, np.where(between <= 0, max_strength, fitted))
    alpha = np.where(n_used == 0, 1.0, mean * strength)
    beta = np.where(n_used == 0, 1.0, (1.0 - mean) * strength)
    if single:
        return float(alpha[0]), float(beta[0])
    return alpha, beta


def probability_best_from_draws(draws: np.ndarray) -> np.ndarray:
    """Share of posterior draws (rows) in which each arm (column) has the largest theta."""
    n_draws, n_arms = draws.shape
    return np.bincount(draws.argmax(axis=1), minlength=n_arms) / n_draws


def posterior_summary(
    counts: ArmCounts,
    objective: str = "ctr",
    rng: np.random.Generator | int | None = None,
    *,
    prior: object = None,
    n_draws: int = 4000,
) -> dict[str, np.ndarray]:
    """Posterior mean and central 95 % interval of theta per arm.

    Exact Beta quantiles for ``"ctr"`` and ``"cvr"``; Monte Carlo for ``"value"``.

    >>> summary = posterior_summary(ArmCounts(["a"], impressions=[1000], clicks=[50]))
    >>> [round(float(summary[k][0]), 3) for k in ("mean", "low", "high")]
    [0.051, 0.038, 0.065]
    """
    post = posterior(counts, objective, prior=prior)
    if objective == "value":
        draws = post.sample(n_draws, np.random.default_rng(rng))
        low, high = np.quantile(draws, [0.025, 0.975], axis=0)
    else:
        low = stats.beta.ppf(0.025, post.alpha, post.beta)
        high = stats.beta.ppf(0.975, post.alpha, post.beta)
    return {"mean": post.mean(), "low": np.asarray(low), "high": np.asarray(high)}
