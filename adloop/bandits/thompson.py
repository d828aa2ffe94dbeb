"""Thompson sampling as the engine allocates with it: probability matching, practical ties."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .batch import (
    MAX_DRAW_ELEMENTS,
    _argmax_counts,
    _floored_rows,
    _prior_rows_from,
    _row_chunks,
)
from .counts import ArmCounts
from .errors import InvalidConfigError, NoActiveArmsError
from .policy import Policy, _check_fraction, _resolve_rng
from .posterior import (
    Posterior,
    beta_draws,
    empirical_bayes_prior,
    posterior,
)

__all__ = ["ThompsonSampling"]


class ThompsonSampling(Policy):
    """Thompson sampling in distribution: traffic weights = posterior probability of being best.

    With batched, delayed updates (the ad-server setting) sampling one posterior draw per
    impression is equivalent in distribution to allocating the batch by probability-best; this
    computes probability-best by vectorized Monte Carlo (``n_draws`` joint draws).  By default
    arms *practically tied* with the leader (posterior mean within ``loss_threshold`` of it,
    once the leader's expected loss is below that threshold) keep only ``min_thompson_share``
    of their probability-matching traffic: the design and the measurements behind the
    defaults are in ``docs/thompson_sampling_tuning.md``.

    Parameters
    ----------
    objective:
        ``"ctr"``, ``"cvr"`` or ``"value"`` (see :mod:`adloop.bandits.posterior`).
    floor:
        Minimum traffic share of every active arm (capped at ``1 / n_active``).
    top_two:
        Top-two Thompson sampling: with probability ``top_two_beta`` play the draw's best arm,
        otherwise its runner-up in the same draw — more exploration of the challenger, which
        identifies the best arm faster (useful when a winner must be declared).
    n_draws:
        Monte Carlo draws per weight computation; the weights' resolution is ``1 / n_draws``.
    prior:
        ``None`` (flat ``Beta(1, 1)``, or empirical Bayes if enabled) or an explicit
        ``(alpha, beta)`` (e.g. an account-level prior), which disables empirical Bayes.
    empirical_bayes:
        Give arms that are new relative to the others a prior fitted (method of moments) to the
        arms with at least ``eb_min_impressions`` impressions, so a variant added mid-flight
        starts at the campaign's typical rate instead of the flat prior's 50 %.  The fitted
        prior applies in full to an arm with no impressions and fades linearly to the flat
        prior as the arm's own impressions reach ``eb_fade_impressions``; ``eb_max_strength``
        caps its weight in impressions.
    loss_threshold:
        "Threshold of caring", relative to the leader's posterior mean: arms closer than this to
        the leader are practically tied with it.  ``0`` gives classic probability matching.
    min_thompson_share:
        Share of their probability-matching traffic that practically tied arms keep once the
        tie is established; the leader takes the rest.  ``1`` gives classic probability
        matching.
    seed:
        Seed of the policy's own generator, used when a call passes no ``rng``.

    Example
    -------
    >>> policy = ThompsonSampling(seed=7)
    >>> counts = ArmCounts(["a", "b"], impressions=[1000, 1000], clicks=[20, 40])
    >>> weights = policy.weights(counts)
    >>> bool(weights[1] > 0.9), round(float(weights.sum()), 6)
    (True, 1.0)
    """

    def __init__(
        self,
        objective: str = "ctr",
        *,
        floor: float = 0.0,
        top_two: bool = False,
        top_two_beta: float = 0.5,
        n_draws: int = 4000,
        prior: tuple[float, float] | None = None,
        empirical_bayes: bool = True,
        eb_min_impressions: float = 100.0,
        eb_fade_impressions: float = 1000.0,
        eb_max_strength: float = 1000.0,
        loss_threshold: float = 0.05,
        min_thompson_share: float = 0.05,
        seed: int | None = None,
    ) -> None:
        super().__init__(objective=objective, floor=floor, seed=seed)
        self.top_two = bool(top_two)
        self.top_two_beta = _check_fraction("top_two_beta", top_two_beta)
        if not isinstance(n_draws, int | np.integer) or n_draws < 1:
            raise InvalidConfigError(f"n_draws must be a positive integer, got {n_draws!r}")
        self.n_draws = int(n_draws)
        if prior is not None:  # one (alpha, beta) for every arm, checked like a batch's
            alpha, beta = _prior_rows_from(prior, ())
            prior = (float(alpha), float(beta))
        self.prior = prior
        self.empirical_bayes = bool(empirical_bayes)
        if not eb_min_impressions >= 0:
            raise InvalidConfigError(f"eb_min_impressions must be >= 0, got {eb_min_impressions!r}")
        if not eb_max_strength >= 2:
            raise InvalidConfigError(f"eb_max_strength must be >= 2, got {eb_max_strength!r}")
        if not eb_fade_impressions > 0:
            raise InvalidConfigError(
                f"eb_fade_impressions must be > 0, got {eb_fade_impressions!r}"
            )
        self.eb_min_impressions = float(eb_min_impressions)
        self.eb_fade_impressions = float(eb_fade_impressions)
        self.eb_max_strength = float(eb_max_strength)
        if not (isinstance(loss_threshold, int | float) and 0.0 <= loss_threshold < np.inf):
            raise InvalidConfigError(
                f"loss_threshold must be a finite number >= 0 (0 disables it), "
                f"got {loss_threshold!r}"
            )
        self.loss_threshold = float(loss_threshold)
        self.min_thompson_share = _check_fraction("min_thompson_share", min_thompson_share)

    def prior_for(self, counts: ArmCounts) -> tuple[np.ndarray, np.ndarray]:
        """Per-arm Beta prior ``(alpha, beta)``: explicit, empirical Bayes (fading), or flat."""
        alpha, beta = self._prior_rows(
            counts.impressions[None], counts.successes(self.objective)[None]
        )
        return alpha[0], beta[0]

    def _prior_rows(
        self, impressions: np.ndarray, successes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prior_for` of each row of ``(n_problems, n_arms)`` counts."""
        shape = impressions.shape
        if self.prior is not None:
            return np.full(shape, self.prior[0]), np.full(shape, self.prior[1])
        flat = np.ones(shape)
        if not self.empirical_bayes:
            return flat, flat.copy()
        alpha, beta = empirical_bayes_prior(
            successes,
            impressions,
            min_trials=self.eb_min_impressions,
            max_strength=self.eb_max_strength,
        )
        newness = np.clip(1.0 - impressions / self.eb_fade_impressions, 0.0, 1.0)
        return (
            newness * alpha[:, None] + (1.0 - newness),
            newness * beta[:, None] + (1.0 - newness),
        )

    def posterior(self, counts: ArmCounts, *, prior: object = None) -> Posterior:
        """Posterior of every arm under this policy's prior (or ``prior`` if given)."""
        chosen = self.prior_for(counts) if prior is None else prior
        return posterior(counts, self.objective, prior=chosen)

    def probability_best(
        self, counts: ArmCounts, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Posterior probability that each arm is best among the active ones (0 if inactive)."""
        active_index = np.flatnonzero(counts.active)
        if len(active_index) == 0:
            raise NoActiveArmsError("no active arm to compare")
        generator = _resolve_rng(rng, self._rng)
        draws = self.posterior(counts).subset(active_index).sample(self.n_draws, generator)
        out = np.zeros(counts.n_arms)
        out[active_index] = np.bincount(draws.argmax(axis=1), minlength=len(active_index))
        return out / self.n_draws

    def batch_weights(
        self,
        impressions: np.ndarray,
        successes: np.ndarray,
        *,
        prior: tuple[np.ndarray | float, np.ndarray | float] | None = None,
        active: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """:meth:`Policy.batch_weights`, optionally under an explicit prior per problem.

        ``prior`` is ``(alpha, beta)``, each a scalar, an ``(n_problems,)`` or an
        ``(n_problems, n_arms)`` array (e.g. a prior fitted to *other* tests); it replaces the
        policy's own prior, as a segment's prior does in :meth:`weights_by_segment`.  Only the
        Beta-Bernoulli objectives (``"ctr"``, ``"cvr"``) are vectorised.

        >>> policy = ThompsonSampling(n_draws=1000)
        >>> weights = policy.batch_weights(np.array([[1000, 1000]] * 3), np.array([[20, 40]] * 3),
        ...                                rng=0)
        >>> weights.shape, bool((weights[:, 1] > 0.9).all())
        ((3, 2), True)
        """
        if self.objective == "value":
            raise InvalidConfigError(
                "batch_weights supports objective 'ctr' or 'cvr'; the 'value' posterior needs "
                "per-arm conversion values: call weights(counts) per campaign instead"
            )
        explicit = None if prior is None else _prior_rows_from(prior, np.shape(impressions))
        return self._batch(impressions, successes, active, rng, prior=explicit)

    def _batch_shares(self, impressions, successes, active, rng, prior=None):
        alpha0, beta0 = self._prior_rows(impressions, successes) if prior is None else prior
        alpha = alpha0 + successes
        beta = beta0 + np.maximum(impressions - successes, 0.0)
        # an arm whose posterior is mostly borrowed prior (a new arm's empirical-Bayes prior, a
        # thin segment's) is not yet tied with anything: it is explored as before
        established = active & (impressions >= alpha0 + beta0)
        n_problems, n_arms = impressions.shape
        share = np.empty((n_problems, n_arms))
        for rows in _row_chunks(n_problems, self.n_draws, n_arms, MAX_DRAW_ELEMENTS):
            draws = beta_draws(alpha[rows], beta[rows], self.n_draws, rng)
            if not active[rows].all():
                draws[np.broadcast_to(~active[rows, None, :], draws.shape)] = -np.inf
            share[rows] = self._share_from_draws(draws, established[rows])
        return share

    def _weights(self, counts, active_index, rng, prior=None):
        prior = self.prior_for(counts) if prior is None else prior
        draws = self.posterior(counts, prior=prior).subset(active_index).sample(self.n_draws, rng)
        strength = np.broadcast_to(np.add(*prior), (counts.n_arms,))[active_index]
        established = counts.impressions[active_index] >= strength
        return self._share_from_draws(draws[None], established[None])[0]

    def _share_from_draws(self, draws: np.ndarray, established: np.ndarray) -> np.ndarray:
        """Shares from ``(n_problems, n_draws, n_arms)`` draws (``-inf`` for inactive arms).

        Probability matching (or top-two), then the practically-tied rule.  The one place the
        allocation is computed: :meth:`weights` passes one problem, :meth:`batch_weights` many.
        """
        share = _argmax_counts(draws)
        leader, tied = self._practically_tied(draws, established)
        if self.top_two:
            # a problem with a single active arm has no runner-up
            several = np.isfinite(draws[:, 0, :]).sum(axis=1) > 1
            np.put_along_axis(draws, draws.argmax(axis=2)[:, :, None], -np.inf, axis=2)
            runner_up = _argmax_counts(draws)
            mixed = self.top_two_beta * share + (1.0 - self.top_two_beta) * runner_up
            share = np.where(several[:, None], mixed, share)
        rows = np.flatnonzero(tied.any(axis=1))
        if len(rows):
            part = share[rows] / share[rows].sum(axis=1, keepdims=True)
            moved = np.where(tied[rows], (1.0 - self.min_thompson_share) * part, 0.0)
            part -= moved
            part[np.arange(len(rows)), leader[rows]] += moved.sum(axis=1)
            share[rows] = part
        return share

    def _practically_tied(
        self, draws: np.ndarray, established: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per problem, the leader and a mask of the other arms practically tied with it.

        The mask is all ``False`` where the leader's tie is not established.
        """
        n_problems, _, n_arms = draws.shape
        leader = np.zeros(n_problems, dtype=np.int64)
        tied = np.zeros((n_problems, n_arms), dtype=bool)
        if self.loss_threshold == 0.0 or self.min_thompson_share == 1.0 or n_arms < 2:
            return leader, tied
        means = draws.mean(axis=1)
        leader = means.argmax(axis=1)
        rows = np.arange(n_problems)
        lead = means[rows, leader]
        tied = established & (means >= ((1.0 - self.loss_threshold) * lead)[:, None])
        tied[rows, leader] = False
        # the loss over *all* arms: an uncertain arm that might be much better keeps it high
        expected_loss = draws.max(axis=2).mean(axis=1) - lead
        tie_holds = (
            (lead > 0.0) & established[rows, leader] & (expected_loss < self.loss_threshold * lead)
        )
        return leader, tied & tie_holds[:, None]

    def weights_by_segment(
        self,
        segment_counts: Mapping[str, ArmCounts],
        overall: ArmCounts,
        rng: np.random.Generator | int | None = None,
    ) -> dict[str, np.ndarray]:
        """Weights per segment from posteriors shrunk toward the campaign-level posterior.

        Each segment's prior for arm ``i`` is centred on arm ``i``'s campaign-level posterior
        mean computed *without* that segment's own data, with a strength fitted to how much
        segments really differ (see :func:`.segments.segment_priors`).  A thin segment thus
        follows the campaign; a segment with lots of evidence follows its own data.
        """
        from .segments import segment_priors

        generator = _resolve_rng(rng, self._rng)
        priors = segment_priors(
            segment_counts, overall, objective=self.objective, base_prior=self.prior_for(overall)
        )
        out: dict[str, np.ndarray] = {}
        for name, counts in segment_counts.items():
            active_index = np.flatnonzero(counts.active)
            if len(active_index) == 0:
                raise NoActiveArmsError(f"segment {name!r} has no active arm")
            share = np.zeros(counts.n_arms)
            share[active_index] = self._weights(counts, active_index, generator, prior=priors[name])
            out[name] = _floored_rows(share[None], counts.active[None], self.floor)[0]
        return out
