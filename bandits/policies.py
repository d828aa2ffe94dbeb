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

from collections.abc import Mapping

import numpy as np

from .batch import (
    MAX_DRAW_ELEMENTS,
    _argmax_counts,
    _argmax_split_rows,
    _check_rows,
    _empirical_means,
    _floored_rows,
    _prior_rows_from,
    _row_chunks,
)
from .counts import ArmCounts
from .errors import InvalidConfigError, NoActiveArmsError
from .posterior import (
    Posterior,
    beta_draws,
    check_objective,
    empirical_bayes_prior,
    posterior,
)
from .snapshot import Snapshot
from .stopping import ZTestResult, two_proportion_z_test

__all__ = [
    "POLICIES",
    "Policy",
    "ThompsonSampling",
    "Uniform",
    "EpsilonGreedy",
    "UCB1",
]


def _resolve_rng(rng: np.random.Generator | int | None, fallback: np.random.Generator):
    if rng is None:
        return fallback
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_fraction(name: str, value: float, *, upper: float = 1.0) -> float:
    if not (isinstance(value, int | float) and 0.0 <= value <= upper):
        raise InvalidConfigError(f"{name} must be a number in [0, {upper}], got {value!r}")
    return float(value)


class Policy:
    """Base class: validation, active mask, floors, snapshots and batches around one hook."""

    def __init__(self, *, objective: str, floor: float, seed: int | None) -> None:
        self.objective = check_objective(objective)
        self.floor = _check_fraction("floor", floor)
        if seed is not None and not isinstance(seed, int | np.integer):
            raise InvalidConfigError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    def weights(
        self, counts: ArmCounts, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Traffic weights per arm (sum 1, zero for inactive arms, >= floor for active ones).

        The floor is capped at ``1 / n_active`` so it can always be honoured.
        """
        active_index = np.flatnonzero(counts.active)
        if len(active_index) == 0:
            raise NoActiveArmsError(
                f"all {counts.n_arms} arms are inactive; add a variant or reactivate one"
            )
        generator = _resolve_rng(rng, self._rng)
        share = np.zeros(counts.n_arms)
        share[active_index] = self._weights(counts, active_index, generator)
        return _floored_rows(share[None], counts.active[None], self.floor)[0]

    def batch_weights(
        self,
        impressions: np.ndarray,
        successes: np.ndarray,
        *,
        active: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """:meth:`weights` for many independent problems at once, vectorised.

        Row ``i`` of the result is what :meth:`weights` gives for problem ``i``'s counts
        (exactly for the deterministic policies; for Thompson sampling in distribution, and
        exactly when one problem is drawn from the same generator state).

        Parameters
        ----------
        impressions, successes:
            ``(n_problems, n_arms)`` counts; ``successes`` are the objective's rewards (clicks
            for ``"ctr"``, conversions for ``"cvr"``, conversion value for ``"value"``).
        active:
            Boolean mask of the same shape (default: all active); inactive arms, e.g. the
            padding of problems with fewer arms, get exactly zero.
        rng:
            Generator or seed for the random policies (default: the policy's own).

        Example
        -------
        >>> EpsilonGreedy(epsilon=0.2).batch_weights(
        ...     np.array([[100, 100], [100, 0]]), np.array([[1, 5], [5, 0]])).tolist()
        [[0.1, 0.9], [0.1, 0.9]]
        """
        return self._batch(impressions, successes, active, rng)

    def _batch(self, impressions, successes, active, rng, **hook_options) -> np.ndarray:
        """Check the rows, run the ``_batch_shares`` hook, apply the floor."""
        impressions, successes, active = _check_rows(impressions, successes, active)
        generator = _resolve_rng(rng, self._rng)
        share = self._batch_shares(impressions, successes, active, generator, **hook_options)
        return _floored_rows(share, active, self.floor)

    def snapshot(self, counts: ArmCounts, rng: np.random.Generator | int | None = None) -> Snapshot:
        """Current weights frozen in a :class:`Snapshot` for the hot path."""
        return Snapshot(counts.arm_ids, self.weights(counts, rng))

    def _rewards(self, counts: ArmCounts) -> np.ndarray:
        return counts.value if self.objective == "value" else counts.successes(self.objective)

    def _weights(
        self, counts: ArmCounts, active_index: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Unnormalised shares of the active arms of one campaign: its batch row, alone."""
        impressions = counts.impressions[active_index][None]
        rewards = self._rewards(counts)[active_index][None]
        return self._batch_shares(impressions, rewards, np.ones_like(impressions, bool), rng)[0]

    def _batch_shares(
        self,
        impressions: np.ndarray,
        successes: np.ndarray,
        active: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Unnormalised ``(n_problems, n_arms)`` shares; inactive entries are ignored."""
        raise NotImplementedError


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
