"""Text-informed priors: a copy scorer's prediction as a little evidence for each variant.

A copy scorer predicts, for each variant, its click-through log-odds relative to its campaign's
mean (a *score*).  This module turns scores into extra Beta pseudo-counts on top of Thompson
sampling's usual prior, so a strong-looking newcomer gets traffic sooner and a weak one less,
and fits from finished tests how much the scorer deserves to be trusted.

The model (all on the log-odds scale, per test or campaign).  An arm's true deviation from its
test's mean, ``delta``, spreads with variance ``tau2`` between arms of a test
(:attr:`TextCalibration.between_variance`); given the score ``s`` it is ``slope * s`` give or
take ``residual_variance``.  Read the other way (the pair is jointly Gaussian) the score is a
noisy *measurement* of ``delta``: ``offset = slope * s / r2`` with precision
``1 / residual_variance - 1 / tau2`` (:attr:`TextCalibration.precision`), where
``r2 = 1 - residual_variance / tau2`` is the share of the arms' spread the scorer explains.
Thompson sampling's own prior treats arms of a test as unrelated, so the measurement is what the
text adds to it: a scorer that explains nothing adds precision zero and leaves the policy
exactly as it was.

:func:`text_prior` adds the measurement to a base prior as pseudo-counts at the test's running
rate ``c`` (pooled over its active arms, base prior included):
``precision / (c (1 - c))`` pseudo-impressions (the log-odds precision of that many impressions
at rate ``c``) with rate ``sigmoid(logit c + offset)``.  Offsets are centred over the active arms
and clipped at ``max_offset``: Beta pseudo-counts only mimic a log-odds measurement near the
centre.

:func:`fit_text_calibration` fits the model by the method of moments on finished tests, from
scores the scorer made *without* having seen those tests (cross-fitted): the slope is the
regression of observed deviations on scores (sampling noise of the observed rates is
independent of out-of-sample scores, so it does not bias the slope), and the two variances are
observed spreads minus binomial sampling noise.  The slope counts only when it is ``min_z``
standard errors (clustered by test) above zero, and is shrunk by ``1 - 1 / z^2`` (positive-part
James-Stein), so a scorer validated as useless gets precision zero.

>>> rng = np.random.default_rng(0)
>>> scores = rng.normal(size=4000); groups = np.repeat(np.arange(1000), 4)
>>> true = 0.2 * scores + rng.normal(0, 0.1, 4000)  # deviations the scores half explain
>>> trials = np.full(4000, 20_000.0)
>>> clicks = rng.binomial(20_000, 0.02 * np.exp(true)).astype(float)
>>> calibration = fit_text_calibration(scores, clicks, trials, groups)
>>> round(calibration.slope, 1), calibration.informative
(0.2, True)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .batch import _check_rows, _floored_rows, _prior_rows_from
from .counts import ArmCounts
from .errors import InvalidConfigError, InvalidCountsError, NoActiveArmsError
from .policy import _resolve_rng
from .snapshot import Snapshot
from .thompson import ThompsonSampling

__all__ = ["TextCalibration", "TextEvidence", "TextPriorThompson", "fit_text_calibration",
           "text_prior"]  # fmt: skip

# Variances below this are treated as this (a test whose arms are identical).
_TINY_VARIANCE = 1e-6


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class TextEvidence:
    """What a calibrated scorer says about arms: log-odds ``offsets`` and their ``precision``.

    ``offsets`` has shape ``(n_arms,)`` or ``(n_problems, n_arms)`` (any constant per problem
    is irrelevant: offsets are centred over the active arms); ``precision`` (log-odds precision,
    about "clicks' worth") is a number or one per problem.  Precision zero means no evidence.
    Build it with :meth:`TextCalibration.evidence`.
    """

    offsets: np.ndarray
    precision: float | np.ndarray

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets, dtype=np.float64)
        precision = np.asarray(self.precision, dtype=np.float64)
        if offsets.ndim not in (1, 2) or not np.all(np.isfinite(offsets)):
            raise InvalidConfigError(
                f"text offsets must be a finite (n_arms,) or (n_problems, n_arms) array, got "
                f"shape {offsets.shape}"
            )
        if precision.ndim > 1 or not (np.all(np.isfinite(precision)) and np.all(precision >= 0)):
            raise InvalidConfigError(
                f"text precision must be a finite number >= 0 or one per problem, got "
                f"{self.precision!r}"
            )
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "precision", precision)


@dataclass(frozen=True)
class TextCalibration:
    """How far a copy scorer can be trusted, fitted on finished tests (see the module).

    slope:
        Regression of arms' observed log-odds deviations on their scores (before shrinkage).
    slope_se:
        Its standard error, clustered by test.
    between_variance:
        ``tau2``: variance of arms' true log-odds around their test's mean.
    residual_variance:
        The same after subtracting :attr:`trusted_slope` times the score.
    min_z:
        How many standard errors above zero the slope must be to count.
    n_tests, n_arms:
        What the fit saw.
    """

    slope: float
    slope_se: float
    between_variance: float
    residual_variance: float
    min_z: float
    n_tests: int
    n_arms: int

    @property
    def slope_z(self) -> float:
        """Slope over its standard error (0 when there is no spread of scores)."""
        return self.slope / self.slope_se if self.slope_se > 0 else 0.0

    @property
    def informative(self) -> bool:
        """Whether the scorer is validated: slope at least ``min_z`` standard errors above 0."""
        return (
            self.slope > 0
            and self.slope_z >= self.min_z
            and self.residual_variance < self.between_variance
        )

    @property
    def trusted_slope(self) -> float:
        """Slope shrunk by ``1 - 1 / z^2``, or 0 when the scorer is not validated."""
        return _shrunk(self.slope, self.slope_z, self.min_z) if self.informative else 0.0

    @property
    def r_squared(self) -> float:
        """Share of the arms' spread within tests that the scores explain (0 if not validated)."""
        if not self.informative:
            return 0.0
        return 1.0 - self.residual_variance / self.between_variance

    @property
    def precision(self) -> float:
        """Log-odds precision the text adds to a flat comparison of arms (0 if not validated)."""
        if not self.informative:
            return 0.0
        return 1.0 / self.residual_variance - 1.0 / self.between_variance

    def evidence(self, scores: np.ndarray) -> TextEvidence:
        """:class:`TextEvidence` for arms with these ``scores`` (any shape the policy takes)."""
        scores = np.asarray(scores, dtype=np.float64)
        if not self.informative:
            return TextEvidence(np.zeros(scores.shape), 0.0)
        return TextEvidence(self.trusted_slope * scores / self.r_squared, self.precision)


def _shrunk(slope: float, z: float, min_z: float) -> float:
    """``slope`` shrunk by ``1 - 1 / z^2`` (positive part), or 0 below ``min_z``."""
    if slope <= 0 or z < min_z or z <= 1.0:
        return 0.0
    return slope * (1.0 - 1.0 / z**2)


def _within_variance(
    residuals: np.ndarray, noise: np.ndarray, group_index: np.ndarray, sizes: np.ndarray
) -> float:
    """Variance of true values around their group's mean, from noisy group-centred values.

    ``residuals`` are already centred on each group's plain mean; for an arm in a group of
    ``K``, ``E[residual^2] = tau2 (1 - 1/K) + v (1 - 2/K) + sum_group(v) / K^2``.
    """
    group_noise = np.bincount(group_index, weights=noise)[group_index]
    k = sizes[group_index]
    expected_noise = noise * (1.0 - 2.0 / k) + group_noise / k**2
    value = (np.sum(residuals**2) - np.sum(expected_noise)) / np.sum(1.0 - 1.0 / k)
    return max(float(value), _TINY_VARIANCE)


def fit_text_calibration(
    scores: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    groups: np.ndarray,
    *,
    min_z: float = 2.0,
    min_trials: float = 100.0,
) -> TextCalibration:
    """Fit :class:`TextCalibration` on finished tests' arms (method of moments, see the module).

    Parameters
    ----------
    scores:
        The scorer's prediction per arm, made without that arm's test (cross-fitted).
    successes, trials:
        Each arm's clicks (or conversions) and impressions.
    groups:
        Each arm's test (or campaign) label; arms are compared within their test only.
    min_z:
        Standard errors above zero the slope needs to count (a useless scorer then adds nothing).
    min_trials:
        Arms with fewer trials are left out; tests left with one arm are left out.
    """
    scores = np.asarray(scores, dtype=np.float64)
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    groups = np.asarray(groups)
    n = scores.shape
    if scores.ndim != 1 or successes.shape != n or trials.shape != n or groups.shape != n:
        raise InvalidCountsError(
            f"scores {scores.shape}, successes {successes.shape}, trials {trials.shape} and "
            f"groups {groups.shape} must be 1-d arrays of the same length (one per arm)"
        )
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(trials))):
        raise InvalidCountsError("scores and trials must be finite")
    if np.any(successes < 0) or np.any(successes > trials):
        raise InvalidCountsError("every arm needs 0 <= successes <= trials")
    if not min_z >= 0:
        raise InvalidConfigError(f"min_z must be >= 0, got {min_z!r}")
    used = trials >= min_trials
    _, group_index = np.unique(groups[used], return_inverse=True)
    sizes = np.bincount(group_index)
    several = sizes[group_index] >= 2
    used[np.flatnonzero(used)[~several]] = False
    _, group_index = np.unique(groups[used], return_inverse=True)
    sizes = np.bincount(group_index).astype(np.float64)
    if len(sizes) < 2:
        raise InvalidCountsError(
            f"need at least two tests with two arms of >= {min_trials:g} trials to calibrate a "
            f"scorer, got {len(sizes)}"
        )
    s, t = successes[used], trials[used]
    observed = np.log((s + 0.5) / (t - s + 0.5))
    noise = 1.0 / (s + 0.5) + 1.0 / (t - s + 0.5)

    def centred(values: np.ndarray) -> np.ndarray:
        return values - (np.bincount(group_index, weights=values) / sizes)[group_index]

    y, x = centred(observed), centred(scores[used])
    spread = float(np.sum(x * x))
    slope = float(np.sum(x * y) / spread) if spread > 0 else 0.0
    # clustered by test: arms of one test share its mean, so they are not independent
    cluster = np.bincount(group_index, weights=x * (y - slope * x))
    slope_se = float(np.sqrt(np.sum(cluster**2)) / spread) if spread > 0 else 0.0
    between = _within_variance(y, noise, group_index, sizes)
    trusted = _shrunk(slope, slope / slope_se if slope_se > 0 else 0.0, min_z)
    residual = _within_variance(y - trusted * x, noise, group_index, sizes)
    return TextCalibration(
        slope, slope_se, between, min(residual, between), float(min_z), len(sizes), len(y)
    )


def text_prior(
    impressions: np.ndarray,
    successes: np.ndarray,
    evidence: TextEvidence,
    *,
    base_prior: tuple[np.ndarray | float, np.ndarray | float],
    active: np.ndarray | None = None,
    strength_scale: float = 1.0,
    max_offset: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-arm Beta prior: ``base_prior`` plus the text's pseudo-counts (see the module).

    ``impressions``, ``successes``, ``active`` and the base ``(alpha, beta)`` have shape
    ``(n_problems, n_arms)`` (the base may be scalars or one per problem; 1-d arrays are one
    problem).  ``strength_scale`` multiplies the evidence's precision.  With precision zero the
    base prior comes back unchanged.

    >>> alpha, beta = text_prior([0, 0], [0, 0], TextEvidence(np.array([0.5, -0.5]), 50.0),
    ...                          base_prior=(1.0, 49.0))
    >>> bool(alpha[0] / (alpha[0] + beta[0]) > 0.02 > alpha[1] / (alpha[1] + beta[1]))
    True
    """
    single = np.ndim(impressions) == 1
    if single:  # one problem: its per-arm arrays become one row
        base_prior = tuple(np.atleast_2d(p) if np.ndim(p) == 1 else p for p in base_prior)
    impressions = np.atleast_2d(np.asarray(impressions, dtype=np.float64))
    successes = np.atleast_2d(np.asarray(successes, dtype=np.float64))
    shape = impressions.shape
    mask = np.ones(shape, dtype=bool) if active is None else np.atleast_2d(np.asarray(active))
    alpha0, beta0 = _prior_rows_from(base_prior, shape)
    if not (strength_scale >= 0 and max_offset >= 0):
        raise InvalidConfigError(
            f"strength_scale and max_offset must be >= 0, got {strength_scale!r}, {max_offset!r}"
        )
    offsets = np.broadcast_to(np.atleast_2d(evidence.offsets), shape)
    precision = strength_scale * np.broadcast_to(np.atleast_1d(evidence.precision), shape[:1])
    n_active = mask.sum(axis=1)
    # the test's running rate: its pooled evidence under the mean base prior
    mean_alpha = np.where(mask, alpha0, 0.0).sum(axis=1) / n_active
    mean_beta = np.where(mask, beta0, 0.0).sum(axis=1) / n_active
    clicks = np.where(mask, successes, 0.0).sum(axis=1)
    shown = np.where(mask, impressions, 0.0).sum(axis=1)
    centre = (clicks + mean_alpha) / (shown + mean_alpha + mean_beta)
    centre = np.clip(centre, 1e-9, 1.0 - 1e-9)
    mean_offset = np.where(mask, offsets, 0.0).sum(axis=1) / n_active
    offset = np.clip(offsets - mean_offset[:, None], -max_offset, max_offset)
    rate = 1.0 / (1.0 + np.exp(-(np.log(centre / (1.0 - centre))[:, None] + offset)))
    pseudo = (precision / (centre * (1.0 - centre)))[:, None]
    alpha = alpha0 + pseudo * rate
    beta = beta0 + pseudo * (1.0 - rate)
    return (alpha[0], beta[0]) if single else (alpha, beta)


class TextPriorThompson(ThompsonSampling):
    """:class:`ThompsonSampling` whose prior also holds a copy scorer's evidence per arm.

    Every call takes ``text``: the :class:`TextEvidence` of the arms (from
    :meth:`TextCalibration.evidence` of their scores); without it, or with precision zero, the
    allocation is exactly :class:`ThompsonSampling`'s.  The text's pseudo-counts go on top of
    the policy's own prior (empirical Bayes for new arms) or of an explicit one.

    Parameters
    ----------
    strength_scale:
        Multiplies the evidence's precision (1: as validated).
    max_offset:
        Largest log-odds offset from the test's running rate the text may claim for an arm.
    posterior_scale:
        Multiplies every arm's posterior counts (prior, text and data) before drawing, so the
        draws spread ``1 / sqrt(posterior_scale)`` as wide: above 1 the policy backs its leader
        sooner.  Chapelle and Li (2011) found such narrowed posteriors (their variance factor is
        ``1 / posterior_scale``) paid on display-ad click logs; fit it on finished tests with
        :func:`adloop.sim.fit_posterior_scale` rather than guessing.  1 is plain Thompson
        sampling.
    thompson_settings:
        :class:`ThompsonSampling`'s parameters.

    Example
    -------
    >>> policy = TextPriorThompson(seed=3)
    >>> counts = ArmCounts(["old", "new"], impressions=[0, 0], clicks=[0, 0])
    >>> text = TextEvidence(np.array([0.0, 0.5]), 200.0)
    >>> bool(policy.weights(counts, text=text)[1] > 0.6)
    True
    """

    def __init__(
        self,
        objective: str = "ctr",
        *,
        strength_scale: float = 1.0,
        max_offset: float = 1.0,
        posterior_scale: float = 1.0,
        **thompson_settings: object,
    ) -> None:
        super().__init__(objective, **thompson_settings)  # type: ignore[arg-type]
        for name, value in (("strength_scale", strength_scale), ("max_offset", max_offset)):
            if not (isinstance(value, int | float) and 0.0 <= value < np.inf):
                raise InvalidConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(posterior_scale, int | float) and 0.0 < posterior_scale < np.inf):
            raise InvalidConfigError(
                f"posterior_scale must be a finite number > 0 (1: plain Thompson sampling), got "
                f"{posterior_scale!r}"
            )
        if posterior_scale != 1.0 and objective == "value":
            raise InvalidConfigError(
                "posterior_scale applies to the Beta posteriors of objective 'ctr' or 'cvr'; "
                "leave it at 1 for 'value'"
            )
        self.strength_scale = float(strength_scale)
        self.max_offset = float(max_offset)
        self.posterior_scale = float(posterior_scale)

    def _with_text(self, impressions, successes, active, base, text):
        return text_prior(
            impressions, successes, text, base_prior=base, active=active,
            strength_scale=self.strength_scale, max_offset=self.max_offset,
        )  # fmt: skip

    def _plain(self, text: TextEvidence | None) -> bool:
        """Whether this call is plain :class:`ThompsonSampling` (no text, no rescaling)."""
        return (text is None or not np.any(text.precision > 0)) and self.posterior_scale == 1.0

    def batch_weights(
        self,
        impressions: np.ndarray,
        successes: np.ndarray,
        *,
        text: TextEvidence | None = None,
        prior: tuple[np.ndarray | float, np.ndarray | float] | None = None,
        active: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """:meth:`ThompsonSampling.batch_weights` with the ``text`` evidence in each arm's prior.

        ``text.offsets`` has shape ``(n_problems, n_arms)``; ``text.precision`` is a number or
        one per problem.
        """
        if self._plain(text):
            return super().batch_weights(
                impressions, successes, prior=prior, active=active, rng=rng
            )
        impressions, successes, mask = _check_rows(impressions, successes, active)
        if text is not None and text.offsets.shape != impressions.shape:
            raise InvalidConfigError(
                f"text offsets {text.offsets.shape} must match counts of shape {impressions.shape}"
            )
        base = (
            self._prior_rows(impressions, successes)
            if prior is None
            else _prior_rows_from(prior, impressions.shape)
        )
        if text is not None and np.any(text.precision > 0):
            base = self._with_text(impressions, successes, mask, base, text)
        scale = self.posterior_scale
        return super().batch_weights(
            impressions * scale, successes * scale, prior=(base[0] * scale, base[1] * scale),
            active=mask, rng=rng,
        )  # fmt: skip

    def weights(
        self,
        counts: ArmCounts,
        rng: np.random.Generator | int | None = None,
        *,
        text: TextEvidence | None = None,
    ) -> np.ndarray:
        """Traffic weights of one campaign, ``text`` evidence (one offset per arm) included."""
        if self._plain(text):
            return super().weights(counts, rng)
        if text is not None and text.offsets.shape != (counts.n_arms,):
            raise InvalidConfigError(
                f"text offsets {text.offsets.shape} must have one value per arm ({counts.n_arms})"
            )
        active_index = np.flatnonzero(counts.active)
        if len(active_index) == 0:
            raise NoActiveArmsError(
                f"all {counts.n_arms} arms are inactive; add a variant or reactivate one"
            )
        prior = self.prior_for(counts)
        if text is not None and np.any(text.precision > 0):
            successes = counts.successes(self.objective)
            prior = self._with_text(counts.impressions, successes, counts.active, prior, text)
        scale = self.posterior_scale
        scaled = replace(
            counts,
            impressions=counts.impressions * scale,
            clicks=counts.clicks * scale,
            conversions=counts.conversions * scale,
        )
        share = np.zeros(counts.n_arms)
        share[active_index] = self._weights(
            scaled, active_index, _resolve_rng(rng, self._rng),
            prior=(np.multiply(prior[0], scale), np.multiply(prior[1], scale)),
        )  # fmt: skip
        return _floored_rows(share[None], counts.active[None], self.floor)[0]

    def snapshot(
        self,
        counts: ArmCounts,
        rng: np.random.Generator | int | None = None,
        *,
        text: TextEvidence | None = None,
    ) -> Snapshot:
        """:meth:`weights` frozen in a :class:`Snapshot` for the hot path."""
        return Snapshot(counts.arm_ids, self.weights(counts, rng, text=text))
