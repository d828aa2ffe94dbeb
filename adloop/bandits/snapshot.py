"""Allocation snapshot: the ad server's hot path.

A :class:`Snapshot` freezes one set of traffic weights.  A single decision is a bisect over the
precomputed cumulative weights (O(log K), well under a microsecond in CPython at 10 or 1,000
arms); a batch of decisions is vectorized with Walker's alias table (O(1) per decision, so
1,000 arms cost the same as 10).  Every decision carries the probability
with which its arm was assigned (the propensity), so logs support off-policy evaluation.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidConfigError, NoActiveArmsError

__all__ = ["Snapshot"]

_CHUNK = 1 << 18


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: column ``j`` keeps itself with probability ``keep[j]``, else
    goes to ``other[j]``.  Zero-weight arms keep nothing and are never anyone's alias."""
    n_arms = len(weights)
    scaled = weights * n_arms
    keep = np.zeros(n_arms)
    other = np.full(n_arms, int(np.argmax(weights)), dtype=np.intp)
    small = [i for i in range(n_arms) if scaled[i] < 1.0]
    large = [i for i in range(n_arms) if scaled[i] >= 1.0]
    while small and large:
        low, high = small.pop(), large.pop()
        keep[low] = scaled[low]
        other[low] = high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    for leftover in small + large:
        # Only rounding leaves entries here: they are full columns unless they have no weight.
        keep[leftover] = 1.0 if weights[leftover] > 0 else 0.0
    return keep, other


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class Snapshot:
    """Frozen traffic weights with cumulative sums precomputed.

    Parameters
    ----------
    arm_ids:
        Ids aligned with ``weights``.
    weights:
        Non-negative, summing to 1 (renormalized if off by rounding).  Zero-weight arms (retired)
        are never chosen.

    Example
    -------
    >>> snap = Snapshot(("a", "b"), np.array([0.25, 0.75]))
    >>> snap.choose(0.1), snap.choose(0.5)
    ((0, 0.25), (1, 0.75))
    >>> arms, probabilities = snap.choose_many(4, np.random.default_rng(0))
    >>> arms.shape, probabilities.shape
    ((4,), (4,))
    """

    arm_ids: tuple[str, ...]
    weights: np.ndarray
    _cumulative: np.ndarray = field(init=False, repr=False, compare=False)
    _cumulative_list: list[float] = field(init=False, repr=False, compare=False)
    _weights_list: list[float] = field(init=False, repr=False, compare=False)
    _alias_keep: np.ndarray = field(init=False, repr=False, compare=False)
    _alias_other: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        arm_ids = tuple(self.arm_ids)
        weights = np.array(self.weights, dtype=np.float64)
        if weights.shape != (len(arm_ids),):
            raise InvalidConfigError(
                f"weights has shape {weights.shape}, expected ({len(arm_ids)},) to match arm_ids"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidConfigError(
                f"weights must be finite and >= 0, got {weights.tolist()[:10]}"
            )
        total = weights.sum()
        if total <= 0:
            raise NoActiveArmsError("every arm has zero weight; activate or add an arm")
        if abs(total - 1.0) > 1e-6:
            raise InvalidConfigError(f"weights must sum to 1, got {total!r}")
        weights /= total
        weights.setflags(write=False)
        cumulative = np.cumsum(weights)
        # Pin the end at exactly 1 so every u in [0, 1) lands on an arm with positive weight.
        last_positive = int(np.flatnonzero(weights > 0)[-1])
        cumulative[last_positive:] = 1.0
        cumulative.setflags(write=False)
        object.__setattr__(self, "arm_ids", arm_ids)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "_cumulative", cumulative)
        object.__setattr__(self, "_cumulative_list", cumulative.tolist())
        object.__setattr__(self, "_weights_list", weights.tolist())
        keep, other = _alias_table(weights)
        object.__setattr__(self, "_alias_keep", keep)
        object.__setattr__(self, "_alias_other", other)

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    def choose(self, u: float) -> tuple[int, float]:
        """Arm index for a uniform draw ``u`` in ``[0, 1)`` and its assignment probability."""
        index = bisect_right(self._cumulative_list, u)
        return index, self._weights_list[index]

    def choose_id(self, u: float) -> tuple[str, float]:
        """Like :meth:`choose` but returns the arm id."""
        index = bisect_right(self._cumulative_list, u)
        return self.arm_ids[index], self._weights_list[index]

    def choose_many(
        self, n: int, rng: np.random.Generator | int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` independent decisions: arm indices (int64) and their probabilities."""
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        n = int(n)
        indices = np.empty(n, dtype=np.intp)
        n_arms = self.n_arms
        # Chunks keep the temporaries in cache; one uniform per decision picks the column (its
        # integer part) and the keep-or-alias coin (its fractional part).
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            scaled = generator.random(stop - start)
            scaled *= n_arms
            column = scaled.astype(np.intp)
            np.minimum(column, n_arms - 1, out=column)
            scaled -= column
            indices[start:stop] = np.where(
                scaled < self._alias_keep[column], column, self._alias_other[column]
            )
        return indices, self.weights[indices]

    def ids(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Arm ids for a sequence of indices."""
        return [self.arm_ids[i] for i in np.asarray(indices).tolist()]
