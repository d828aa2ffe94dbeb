"""Per-arm evidence (:class:`ArmCounts`) and helpers for non-stationary traffic.

Counts may be floats: exponentially discounted or windowed counts are as valid as raw ones, so
the same posteriors work on ``storage``'s discounted ``arm_stats`` and on the helpers here.

Retired arms are expressed with the ``active`` mask: an inactive arm keeps its row (so indices
and ids stay aligned with the caller's variant list) but every policy gives it exactly zero
traffic and it never competes in probability-best.  Not passing the arm at all works too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.signal import lfilter

from .errors import InvalidConfigError, InvalidCountsError

__all__ = [
    "ArmCounts",
    "decay_factor",
    "discounted_sums",
    "sliding_window_sums",
    "DiscountedCounts",
    "SlidingWindowCounts",
]


def _as_array(name: str, values: Any, n_arms: int) -> np.ndarray:
    # A private copy: the stored arrays are frozen, the caller's must stay writable.
    array = np.array(values, dtype=np.float64)
    if array.shape != (n_arms,):
        raise InvalidCountsError(
            f"{name} has shape {array.shape}, expected ({n_arms},) — one value per arm id"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidCountsError(f"{name} contains NaN or infinite values: {array.tolist()[:10]}")
    if np.any(array < 0):
        raise InvalidCountsError(
            f"{name} must be non-negative, got min {array.min()!r}; counts are totals per arm"
        )
    return array


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class ArmCounts:
    """Evidence per arm: impressions, clicks, conversions and conversion value.

    Parameters
    ----------
    arm_ids:
        One string id per arm (variant ids in the engine).
    impressions, clicks, conversions, value:
        Arrays of length ``len(arm_ids)``; ints or floats (discounted counts), all ``>= 0``.
        ``conversions`` and ``value`` default to zeros.  Clicks may exceed impressions when events
        arrive out of order; posteriors then treat the arm as having zero failures.
    active:
        Boolean mask; ``False`` marks a retired arm that must get zero traffic.  Default: all.

    Example
    -------
    >>> counts = ArmCounts(["a", "b"], impressions=[100, 120], clicks=[3, 7])
    >>> counts.n_arms, counts.active.tolist()
    (2, [True, True])
    """

    arm_ids: tuple[str, ...]
    impressions: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray = field(default=None)  # type: ignore[assignment]
    value: np.ndarray = field(default=None)  # type: ignore[assignment]
    active: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        ids = tuple(str(arm_id) for arm_id in self.arm_ids)
        if len(set(ids)) != len(ids):
            raise InvalidCountsError(f"arm_ids must be unique, got {list(ids)[:20]}")
        n_arms = len(ids)
        object.__setattr__(self, "arm_ids", ids)
        for name in ("impressions", "clicks", "conversions", "value"):
            raw = getattr(self, name)
            raw = np.zeros(n_arms) if raw is None else raw
            array = _as_array(name, raw, n_arms)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        mask = np.ones(n_arms, dtype=bool) if self.active is None else np.asarray(self.active)
        if mask.shape != (n_arms,) or mask.dtype != np.bool_:
            raise InvalidCountsError(
                f"active must be a boolean array of shape ({n_arms},), "
                f"got {mask.dtype} {mask.shape}"
            )
        mask = mask.copy()
        mask.setflags(write=False)
        object.__setattr__(self, "active", mask)

    @property
    def n_arms(self) -> int:
        """Number of arms, active or not."""
        return len(self.arm_ids)

    def successes(self, objective: str) -> np.ndarray:
        """Clicks for ``"ctr"``, conversions for ``"cvr"`` and ``"value"``."""
        return self.clicks if objective == "ctr" else self.conversions

    def with_active(self, active: Sequence[bool] | np.ndarray) -> ArmCounts:
        """A copy with a new active mask (e.g. after retiring arms)."""
        return replace(self, active=np.asarray(active, dtype=bool))

    def retire(self, arm_ids: Iterable[str]) -> ArmCounts:
        """A copy with the named arms marked inactive."""
        drop = set(arm_ids)
        unknown = drop - set(self.arm_ids)
        if unknown:
            raise InvalidCountsError(f"cannot retire unknown arm ids {sorted(unknown)}")
        mask = self.active & np.array([arm_id not in drop for arm_id in self.arm_ids])
        return self.with_active(mask)

    def scaled(self, factor: float) -> ArmCounts:
        """All counts multiplied by ``factor`` (one step of exponential discounting)."""
        if not (0.0 <= factor <= 1.0):
            raise InvalidConfigError(f"factor must be in [0, 1], got {factor!r}")
        return replace(
            self,
            impressions=self.impressions * factor,
            clicks=self.clicks * factor,
            conversions=self.conversions * factor,
            value=self.value * factor,
        )

    def __add__(self, other: ArmCounts) -> ArmCounts:
        if other.arm_ids != self.arm_ids:
            raise InvalidCountsError(
                "can only add ArmCounts with the same arm_ids in the same order"
            )
        return replace(
            self,
            impressions=self.impressions + other.impressions,
            clicks=self.clicks + other.clicks,
            conversions=self.conversions + other.conversions,
            value=self.value + other.value,
        )

    @classmethod
    def zeros(cls, arm_ids: Sequence[str]) -> ArmCounts:
        """No evidence yet for ``arm_ids``."""
        n_arms = len(arm_ids)
        return cls(tuple(arm_ids), np.zeros(n_arms), np.zeros(n_arms))

    @classmethod
    def from_frame(cls, frame: Any, *, active: Sequence[bool] | None = None) -> ArmCounts:
        """Build from a polars (or pandas) frame with ``variant_id, impressions, clicks`` and
        optional ``conversions, value`` (storage's ``arm_stats`` output).

        A ``status`` column, if present and ``active`` is not given, marks arms whose status is
        ``"retired"`` as inactive.
        """
        columns = list(frame.columns)
        missing = {"variant_id", "impressions", "clicks"} - set(columns)
        if missing:
            raise InvalidCountsError(f"frame lacks required columns {sorted(missing)}")

        def column(name: str) -> np.ndarray | None:
            if name not in columns:
                return None
            values = frame[name]
            values = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
            return np.asarray(values, dtype=np.float64)

        arm_ids = [str(v) for v in list(frame["variant_id"])]
        if active is None and "status" in columns:
            active = [status != "retired" for status in list(frame["status"])]
        return cls(
            tuple(arm_ids),
            column("impressions"),
            column("clicks"),
            column("conversions"),
            column("value"),
            None if active is None else np.asarray(active, dtype=bool),
        )


def decay_factor(elapsed: float | np.ndarray, half_life: float) -> float | np.ndarray:
    """Weight left on evidence that is ``elapsed`` units old: ``0.5 ** (elapsed / half_life)``.

    Units are the caller's: impressions for an impression half-life, seconds for a time one.

    >>> decay_factor(10, half_life=10)
    0.5
    """
    if not half_life > 0:
        raise InvalidConfigError(f"half_life must be > 0, got {half_life!r}")
    result = 0.5 ** (np.asarray(elapsed, dtype=np.float64) / half_life)
    return float(result) if result.ndim == 0 else result


def discounted_sums(steps: np.ndarray, half_life: float, *, axis: int = 0) -> np.ndarray:
    """Running exponentially discounted totals of a stream of per-step counts.

    ``out[t] = steps[t] + g * out[t-1]`` with ``g = 0.5 ** (1 / half_life)``: the half-life is in
    steps (batches, hours...).  Vectorized over every other axis (arms, simulations).

    >>> discounted_sums(np.array([[4.0], [0.0]]), half_life=1).ravel().tolist()
    [4.0, 2.0]
    """
    gamma = decay_factor(1.0, half_life)
    return lfilter([1.0], [1.0, -gamma], np.asarray(steps, dtype=np.float64), axis=axis)


def sliding_window_sums(steps: np.ndarray, window: int, *, axis: int = 0) -> np.ndarray:
    """Running totals of the last ``window`` steps of a stream (inclusive of the current one).

    >>> sliding_window_sums(np.array([1.0, 2.0, 3.0, 4.0]), window=2).tolist()
    [1.0, 3.0, 5.0, 7.0]
    """
    if int(window) != window or window < 1:
        raise InvalidConfigError(f"window must be a positive integer, got {window!r}")
    data = np.moveaxis(np.asarray(steps, dtype=np.float64), axis, 0)
    total = np.cumsum(data, axis=0)
    out = total.copy()
    out[window:] -= total[:-window]
    return np.moveaxis(out, 0, axis)


def _batch_rows(
    arm_ids: tuple[str, ...],
    impressions: Sequence[float] | np.ndarray,
    clicks: Sequence[float] | np.ndarray,
    conversions: Sequence[float] | np.ndarray | None,
    value: Sequence[float] | np.ndarray | None,
) -> np.ndarray:
    """One batch of per-arm counts, checked as :class:`ArmCounts`, stacked as four rows.

    The rows are impressions, clicks, conversions and value (shape ``(4, n_arms)``).
    """
    batch = ArmCounts(arm_ids, impressions, clicks, conversions, value)
    return np.vstack([batch.impressions, batch.clicks, batch.conversions, batch.value])


class DiscountedCounts:
    """Streaming exponentially discounted arm counts (half-life in impressions or in time).

    Each :meth:`update` first decays the stored totals by ``0.5 ** (elapsed / half_life)`` and
    then adds the new batch.  ``elapsed`` defaults to the batch's impressions (an
    impression half-life); pass seconds instead for a time half-life.

    >>> stream = DiscountedCounts(["a", "b"], half_life=100)
    >>> stream.update([50, 50], [5, 1])
    >>> stream.update([50, 50], [1, 5])
    >>> stream.counts().clicks.round(2).tolist()
    [3.5, 5.5]
    """

    def __init__(self, arm_ids: Sequence[str], *, half_life: float) -> None:
        if not half_life > 0:
            raise InvalidConfigError(f"half_life must be > 0, got {half_life!r}")
        self.arm_ids = tuple(arm_ids)
        self.half_life = half_life
        self._totals = np.zeros((4, len(self.arm_ids)))
        self._active = np.ones(len(self.arm_ids), dtype=bool)

    def add_arms(self, arm_ids: Sequence[str]) -> None:
        """Start tracking new arms (added mid-flight) with zero evidence."""
        self.arm_ids = self.arm_ids + tuple(arm_ids)
        self._totals = np.hstack([self._totals, np.zeros((4, len(arm_ids)))])
        self._active = np.concatenate([self._active, np.ones(len(arm_ids), dtype=bool)])

    def retire(self, arm_ids: Iterable[str]) -> None:
        """Mark arms inactive; they keep their evidence but get no traffic."""
        drop = set(arm_ids)
        self._active &= np.array([arm_id not in drop for arm_id in self.arm_ids])

    def update(
        self,
        impressions: Sequence[float] | np.ndarray,
        clicks: Sequence[float] | np.ndarray,
        conversions: Sequence[float] | np.ndarray | None = None,
        value: Sequence[float] | np.ndarray | None = None,
        *,
        elapsed: float | None = None,
    ) -> None:
        """Decay what is stored, then add one batch of per-arm counts."""
        rows = _batch_rows(self.arm_ids, impressions, clicks, conversions, value)
        if elapsed is None:
            elapsed = float(rows[0].sum())
        if elapsed < 0:
            raise InvalidConfigError(f"elapsed must be >= 0, got {elapsed!r}")
        self._totals *= decay_factor(elapsed, self.half_life)
        self._totals += rows

    def counts(self) -> ArmCounts:
        """The discounted totals as :class:`ArmCounts`."""
        return ArmCounts(self.arm_ids, *self._totals, active=self._active)


class SlidingWindowCounts:
    """Streaming arm counts over a sliding window (in impressions or time units).

    Each batch is stamped with ``at`` (default: cumulative impressions so far); :meth:`counts`
    sums the batches stamped within ``window`` of the latest one.

    >>> stream = SlidingWindowCounts(["a"], window=100)
    >>> for _ in range(3):
    ...     stream.update([50], [5])
    >>> stream.counts().impressions.tolist()
    [100.0]
    """

    def __init__(self, arm_ids: Sequence[str], *, window: float) -> None:
        if not window > 0:
            raise InvalidConfigError(f"window must be > 0, got {window!r}")
        self.arm_ids = tuple(arm_ids)
        self.window = window
        self._batches: deque[tuple[float, np.ndarray]] = deque()
        self._clock = 0.0

    def update(
        self,
        impressions: Sequence[float] | np.ndarray,
        clicks: Sequence[float] | np.ndarray,
        conversions: Sequence[float] | np.ndarray | None = None,
        value: Sequence[float] | np.ndarray | None = None,
        *,
        at: float | None = None,
    ) -> None:
        """Add one batch of per-arm counts stamped ``at`` (monotone non-decreasing)."""
        rows = _batch_rows(self.arm_ids, impressions, clicks, conversions, value)
        stamp = self._clock + float(rows[0].sum()) if at is None else float(at)
        if stamp < self._clock:
            raise InvalidConfigError(f"at must not go backwards: {stamp!r} < {self._clock!r}")
        self._clock = stamp
        self._batches.append((stamp, rows))
        while self._batches and self._batches[0][0] <= self._clock - self.window:
            self._batches.popleft()

    def counts(self) -> ArmCounts:
        """Totals of the batches inside the window."""
        totals = np.zeros((4, len(self.arm_ids)))
        for _, rows in self._batches:
            totals += rows
        return ArmCounts(self.arm_ids, *totals)
