"""How the engine allocates, refreshes and judges campaigns: :class:`EngineConfig`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adloop.bandits import POLICIES
from adloop.optimizer.errors import ConfigError

__all__ = ["TEXT_POLICY", "EngineConfig", "ScaleOutConfig"]

#: The policy name of text-informed Thompson sampling (see :mod:`adloop.optimizer.text_priors`).
TEXT_POLICY = "ts_text"


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How the engine allocates, refreshes and judges campaigns (checked at construction).

    A bad value raises :class:`~adloop.optimizer.errors.ConfigError` naming the field, the
    value and the values allowed.

    Example::

        EngineConfig(refresh_interval=2.0, refresh_events=500, floor=0.01)
    """

    refresh_interval: float = 2.0
    """Seconds (of the engine's clock) after which a snapshot with new data is rebuilt."""
    refresh_events: int = 10_000
    """Rebuild a campaign's snapshot after this many new decisions + recorded events."""
    background: bool | None = None
    """Refresh and flush on a background thread; None: only when the clock is real time
    (a simulated clock refreshes inline in :meth:`Engine.record` so runs are reproducible)."""
    flush_interval: float = 1.0
    """Seconds between background flushes of queued decisions to the store."""
    policy: str = "ts"
    """Allocation policy, a name in ``adloop.bandits.POLICIES``: ``ts`` (Thompson sampling),
    ``ts_text`` (Thompson sampling whose prior for each variant also holds its tenant's
    outcome scorer's prediction, as far as the scorer's calibration trusts it; a tenant
    without a calibrated scorer is allocated as by ``ts``; see
    :mod:`adloop.optimizer.text_priors`), or a baseline for comparisons: ``uniform`` (equal
    split), ``egreedy`` (epsilon-greedy, 10 %) or ``ucb1``."""
    floor: float = 0.0
    """Minimum traffic share per active variant (Thompson sampling floor)."""
    top_two: bool = False
    """Use top-two Thompson sampling (more exploration of the runner-up)."""
    n_draws: int = 4000
    """Monte Carlo draws for probability-best and allocation weights."""
    half_life: timedelta | None = None
    """Exponential discounting of old events for allocation (None: no discounting)."""
    segment_allocation: bool = True
    """Keep per-segment snapshots (hierarchically shrunk) for segments seen in the data."""
    winner_threshold: float = 0.95
    """Probability-best a variant needs before it can be declared the winner."""
    value_remaining: float = 0.01
    """Scott's value-remaining bound (relative) for declaring a winner."""
    retire_floor: float = 0.01
    """Retire active variants whose probability-best falls below this floor ..."""
    retire_min_impressions: int = 500
    """... once they have at least this many impressions."""
    srm_alpha: float = 0.001
    """Sample-ratio-mismatch p-value below which a campaign is flagged."""
    srm_min_impressions: int = 100
    """Below this many impressions the SRM check reports 'not enough data'."""
    max_choose_n: int = 1000
    """Largest number of decisions one ``choose_many`` call may return."""
    generation_time_budget: float | None = 60.0
    """Seconds after which the generator pool stops topping up a request (the round in
    progress finishes); None: no time limit. Keeps campaign creation bounded on slow CPUs."""
    max_variants_per_campaign: int = 100
    """Most servable (active or winner) variants one campaign may have. Creating or adding
    beyond it is rejected (HTTP 422 naming the field): retire variants first, or raise this.
    Every decision and refresh costs time in proportion to it."""
    max_segments_per_campaign: int = 256
    """Most segments of one campaign that get an allocation of their own: those with the most
    impressions. Every other segment value is served the campaign-wide allocation (an explicit
    "other" bucket), so one tenant posting 20,000 segment values costs a refresh 256 segment
    posteriors, not 20,000, and never slows other tenants. Events are never rejected for it."""

    def __post_init__(self) -> None:
        for name in (
            "refresh_interval",
            "flush_interval",
            "refresh_events",
            "n_draws",
            "max_choose_n",
            "max_variants_per_campaign",
            "max_segments_per_campaign",
        ):
            _check(name, getattr(self, name), lambda v: v > 0, "a number > 0")
        for name in ("floor", "retire_floor", "srm_alpha"):
            _check(name, getattr(self, name), lambda v: 0.0 <= v < 1.0, "a share in [0, 1)")
        _check(
            "winner_threshold",
            self.winner_threshold,
            lambda v: 0.5 <= v < 1.0,
            "a probability in [0.5, 1), e.g. 0.95",
        )
        _check(
            "value_remaining", self.value_remaining, lambda v: 0.0 < v < 1.0, "a share in (0, 1)"
        )
        for name in ("retire_min_impressions", "srm_min_impressions"):
            _check(name, getattr(self, name), lambda v: v >= 0, "a count >= 0")
        if self.generation_time_budget is not None:
            _check(
                "generation_time_budget",
                self.generation_time_budget,
                lambda v: v > 0,
                "seconds > 0, or None for no limit",
            )
        if self.policy not in (*POLICIES, TEXT_POLICY):
            names = ", ".join(map(repr, (*POLICIES, TEXT_POLICY)))
            raise ConfigError("policy", f"got {self.policy!r}; use one of {names}")
        if self.half_life is not None:
            _check(
                "half_life",
                self.half_life,
                lambda v: v > timedelta(0),
                "a positive timedelta, or None for no discounting",
            )


def _check(name: str, value: Any, valid: Callable[[Any], bool], allowed: str) -> None:
    """Raise a :class:`ConfigError` for ``name`` unless ``valid(value)`` holds."""
    try:
        ok = bool(valid(value))
    except TypeError:  # e.g. None or a string where a number belongs
        ok = False
    if not ok:
        raise ConfigError(name, f"got {value!r}; use {allowed}")


@dataclass(frozen=True, kw_only=True)
class ScaleOutConfig:
    """How an ``adloop serve`` process joins a scaled-out deployment (checked at construction).

    ``adloop serve`` options, or the environment variables named here::

        ScaleOutConfig(events_to="kafka://10.0.0.5:9092/adloop.events",
                       snapshots="postgresql://adloop@10.0.0.6/adloop")
    """

    events_to: str
    """``kafka://HOST:PORT[,HOST:PORT...][/topic]``: where posted events and served decisions
    go (``--events-to``, ``ADLOOP_EVENTS_TO``; topic default ``adloop.events``)."""
    snapshots: str
    """``postgresql://...``: the shared store of snapshots and arms (``--snapshots``,
    ``ADLOOP_SNAPSHOTS``)."""
    ack_timeout: float = 5.0
    """Seconds ``POST /v1/events`` waits for the broker's acknowledgement before answering
    503 with Retry-After (``--ack-timeout``)."""
    linger: float = 0.005
    """Seconds events wait to share a message with other requests' events (a message holds
    up to 500 events)."""
    snapshot_poll: float = 5.0
    """Seconds between snapshot polls (a fallback: new versions are pushed by NOTIFY)."""
    refresh_every: float = 2.0
    """Seconds between snapshot refreshes in the one process started with ``--scheduler``."""

    def __post_init__(self) -> None:
        _check(
            "events_to",
            self.events_to,
            lambda v: v.startswith("kafka://") and len(v) > len("kafka://"),
            "kafka://HOST:PORT[/topic], e.g. kafka://127.0.0.1:9092/adloop.events",
        )
        _check(
            "snapshots",
            self.snapshots,
            lambda v: v.startswith(("postgresql://", "postgres://")),
            "a PostgreSQL URL, e.g. postgresql://adloop@127.0.0.1:5432/adloop",
        )
        for name in ("ack_timeout", "linger", "snapshot_poll", "refresh_every"):
            _check(name, getattr(self, name), lambda v: v > 0, "seconds > 0")
