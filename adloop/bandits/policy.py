"""The policy base class: validation, active arms, floors, snapshots and batches around one hook.

Subclasses (:mod:`.thompson`, :mod:`.policies`) fill in ``_batch_shares``; see
:mod:`.policies` for the surface every policy shares.
"""

from __future__ import annotations

import numpy as np

from .batch import (
    _check_rows,
    _floored_rows,
)
from .counts import ArmCounts
from .errors import InvalidConfigError, NoActiveArmsError
from .posterior import (
    check_objective,
)
from .snapshot import Snapshot

__all__ = ["Policy"]


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
