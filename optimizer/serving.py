"""Live serving tables: per campaign, the allocation snapshots the hot path chooses from.

Each campaign has one :class:`LiveCampaign`, rebuilt from the store's arm statistics by
:meth:`ServingTables.build` and swapped in whole, so a chooser on another thread sees either
the old or the new table, never a mix. The tables are ``adloop.bandits.Snapshot`` objects:
a single decision bisects their cumulative weights (O(log K)), a batch uses their alias
table (O(1) per decision).

A build that fails for one campaign (corrupt rows, a policy that rejects its counts, a store
read error) never stops the others: that campaign keeps serving its last snapshot (or a
uniform split when it has none for the current variants) and the failure is kept as a
:class:`RefreshFailure` until a build succeeds, for ``data_quality`` and ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from adloop.bandits import POLICIES, Policy, Snapshot, ThompsonSampling
from adloop.optimizer.arm_stats import arm_counts, stats_by_segment, stats_by_variant
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.errors import CampaignNotFound, NoActiveVariants

__all__ = ["SERVABLE", "LiveCampaign", "RefreshFailure", "ServingTables", "allocation_policy"]

_log = logging.getLogger("adloop.engine")

SERVABLE = ("active", "winner")
"""Variant statuses that receive traffic (``pending`` ones await review, ``rejected`` never
serve)."""


@dataclass(slots=True, eq=False)
class LiveCampaign:
    """Everything ``choose`` needs for one campaign; replaced whole on refresh (atomic swap).

    ``overall`` is None when the campaign has no servable variant; ``by_segment`` holds the
    segments seen in the data (others are served from ``overall``). ``texts`` are aligned with
    the snapshots' ``arm_ids``.
    """

    campaign_id: str
    tenant: str
    log_impressions: bool
    texts: list[str]
    overall: Snapshot | None
    by_segment: dict[str, Snapshot]
    built_at: datetime
    """When the snapshots served now were computed (their age is reported)."""
    attempted_at: datetime
    """When a build was last tried (drives ``refresh_interval``; later than ``built_at``
    while builds fail)."""
    activity: int = 0
    """Decisions + events since a build was last tried (drives ``refresh_events``)."""
    n_pending: int = 0
    """Variants awaiting review (named by the error when nothing else serves)."""

    def weights(self) -> dict[str, float]:
        """Variant id -> traffic share of the campaign-wide snapshot."""
        if self.overall is None:
            return {}
        return dict(zip(self.overall.arm_ids, self.overall.weights.tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class RefreshFailure:
    """A campaign whose snapshot builds fail, and what it serves meanwhile.

    ``serving`` is ``"last snapshot"`` (the allocation before the failure), ``"uniform"``
    (an equal split over the servable variants: no earlier snapshot fits them) or
    ``"nothing"`` (the campaign could not even be read and had no snapshot).
    """

    campaign_id: str
    tenant: str | None
    error: str
    failures: int
    """Consecutive failed builds."""
    since: datetime
    """When the first of them failed."""
    serving: str

    def as_dict(self) -> dict[str, Any]:
        """``error``, ``failures``, ``since`` (ISO format) and ``serving``, ready for JSON."""
        report = asdict(self)
        del report["campaign_id"], report["tenant"]  # the caller knows them already
        report["since"] = self.since.isoformat()
        return report


def allocation_policy(config: EngineConfig, objective: str, n_arms: int) -> Policy:
    """The bandit policy ``config`` asks for, with its floor capped so ``n_arms`` fit."""
    floor = min(config.floor, 0.99 / n_arms)
    if config.policy == "ts":
        return ThompsonSampling(
            objective, floor=floor, top_two=config.top_two, n_draws=config.n_draws
        )
    return POLICIES[config.policy](objective, floor=floor)


class ServingTables:
    """The live campaigns of one engine, by campaign id, and how to (re)build them.

    The owner serializes :meth:`build` calls (the engine's lock); :meth:`serving` is the
    lock-free hot path. Each live campaign remembers its tenant, which is how the engine
    hides one tenant's campaigns from another.
    """

    def __init__(
        self,
        store: Any,
        config: EngineConfig,
        clock: Callable[[], datetime],
        rng: np.random.Generator,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._rng = rng
        self._live: dict[str, LiveCampaign] = {}
        self._failures: dict[str, RefreshFailure] = {}
        self.n_builds = 0
        """How many snapshots have been built (a monitoring counter)."""
        self.n_failed_builds = 0
        """How many builds have failed, all campaigns together (a monitoring counter)."""

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, campaign_id: object) -> bool:
        return campaign_id in self._live

    def campaign_ids(self) -> list[str]:
        """Ids of every live campaign."""
        return list(self._live)

    def get(self, campaign_id: str) -> LiveCampaign | None:
        """The live campaign, or None."""
        return self._live.get(campaign_id)

    def failure(self, campaign_id: str) -> RefreshFailure | None:
        """The campaign's current build failure, or None when its last build succeeded."""
        return self._failures.get(campaign_id)

    def failures(self) -> list[RefreshFailure]:
        """Every campaign whose last build failed."""
        return list(self._failures.values())

    def serving(
        self, campaign_id: str, segment: str | None, tenant: str | None
    ) -> tuple[LiveCampaign, Snapshot]:
        """The live campaign and the snapshot that serves ``segment`` (hot path)."""
        live = self._live.get(campaign_id)
        if live is None or (tenant is not None and live.tenant != tenant):
            raise CampaignNotFound(campaign_id)
        snapshot = live.overall
        if segment is not None:
            snapshot = live.by_segment.get(segment, snapshot)
        if snapshot is None:
            raise NoActiveVariants(campaign_id, live.n_pending)
        return live, snapshot

    def visible_row(self, campaign_id: str, tenant: str | None) -> dict[str, Any]:
        """The campaign's store row, if it exists and ``tenant`` (None: any) may see it."""
        live = self._live.get(campaign_id)
        if live is None or (tenant is not None and live.tenant != tenant):
            raise CampaignNotFound(campaign_id)
        row = self._store.campaign(campaign_id)
        if row is None:
            raise CampaignNotFound(campaign_id)
        return row

    def hidden_from(self, tenant: str | None, campaign_ids: Iterable[Any]) -> set[str]:
        """The ids among ``campaign_ids`` that ``tenant`` (None: any) may not write to.

        Deny by default: an id is the tenant's only when this engine serves it for that
        tenant. Another tenant's campaign, one the store holds but this engine does not
        serve (created by another engine on the same store, or not yet built) and one that
        does not exist are all hidden, so each gets the same "unknown campaign" answer.
        Non-string ids are left to the store, which rejects them with their own reason.
        """
        if tenant is None:
            return set()
        hidden = set()
        for campaign_id in campaign_ids:
            if not isinstance(campaign_id, str):
                continue
            live = self._live.get(campaign_id)
            if live is None or live.tenant != tenant:
                hidden.add(campaign_id)
        return hidden

    def add_activity(self, counts: Mapping[Any, int]) -> None:
        """Count new events toward each campaign's refresh (``refresh_events``)."""
        for campaign_id, n in counts.items():
            live = self._live.get(campaign_id)
            if live is not None:
                live.activity += n

    def due(self, now: datetime) -> list[str]:
        """Campaigns whose snapshot has seen enough new activity, or is old and has any."""
        interval = timedelta(seconds=self._config.refresh_interval)
        events = self._config.refresh_events
        return [
            campaign_id
            for campaign_id, live in list(self._live.items())
            if live.activity >= events
            or (live.activity > 0 and now - live.attempted_at >= interval)
        ]

    def ages(self, now: datetime) -> dict[str, float]:
        """Seconds since each campaign's snapshot was built."""
        return {
            campaign_id: max(0.0, (now - live.built_at).total_seconds())
            for campaign_id, live in list(self._live.items())
        }

    def build(self, campaign_id: str) -> None:
        """Build the campaign's snapshots from the store and swap them in.

        When the allocation cannot be computed, the campaign keeps serving its last
        snapshot (or a uniform split) and the failure is recorded instead of raised.

        Raises:
            CampaignNotFound: the store has no such campaign.
            Exception: whatever the store raises while reading the campaign or its variants
                (nothing is swapped in then); :meth:`build_isolated` records it instead.
        """
        row = self._store.campaign(campaign_id)
        if row is None:
            raise CampaignNotFound(campaign_id)
        settings = row.get("settings") or {}
        now = self._clock()
        stored = self._store.variants(campaign_id)
        n_pending = sum(v["status"] == "pending" for v in stored)
        variants = [v for v in stored if v["status"] in SERVABLE]
        winner = row.get("winner_variant_id")
        if winner:
            variants = [v for v in variants if v["variant_id"] == winner] or variants
        ids = [v["variant_id"] for v in variants]
        built_at = now
        try:
            overall, by_segment = self._snapshots(campaign_id, row.get("objective") or "ctr", ids)
        except Exception as error:  # noqa: BLE001 - one campaign's bad data must not stop serving
            previous = self._live.get(campaign_id)
            kept = previous.overall if previous is not None else None
            if kept is not None and kept.arm_ids == tuple(ids):
                # Same variants as before: their last allocation is still the best guess
                # (a uniform split stays one while builds keep failing).
                overall, by_segment, built_at = kept, previous.by_segment, previous.built_at
                failing = self._failures.get(campaign_id)
                serving = failing.serving if failing is not None else "last snapshot"
            else:
                overall, by_segment, serving = _uniform(ids), {}, "uniform"
            self._record_failure(campaign_id, row["tenant"], error, serving, now)
        else:
            self._failures.pop(campaign_id, None)
            self.n_builds += 1
        self._live[campaign_id] = LiveCampaign(
            campaign_id=campaign_id,
            tenant=row["tenant"],
            log_impressions=not settings.get("impressions_reported_separately", False),
            texts=[v["text"] for v in variants],
            overall=overall,
            by_segment=by_segment,
            built_at=built_at,
            attempted_at=now,
            n_pending=n_pending,
        )

    def build_isolated(self, campaign_id: str) -> bool:
        """:meth:`build`, recording any failure instead of raising it; True when it built.

        A campaign the store cannot even read keeps its current tables (or has none), and
        is retried after ``refresh_interval`` like any failed build.
        """
        try:
            self.build(campaign_id)
        except Exception as error:  # noqa: BLE001 - isolate: the caller goes on to the others
            previous = self._live.get(campaign_id)
            now = self._clock()
            if previous is not None:
                self._live[campaign_id] = replace(previous, attempted_at=now, activity=0)
            failing = self._failures.get(campaign_id)
            tenant = previous.tenant if previous is not None else None
            serving = "nothing" if previous is None else "last snapshot"
            if previous is not None and failing is not None:
                serving = failing.serving  # still the uniform split, if that is what it serves
            self._record_failure(campaign_id, tenant, error, serving, now)
            return False
        return campaign_id not in self._failures

    def _record_failure(
        self,
        campaign_id: str,
        tenant: str | None,
        error: BaseException,
        serving: str,
        now: datetime,
    ) -> None:
        """Keep the failure for reports; log it once when it starts or its reason changes."""
        message = f"{type(error).__name__}: {error}"
        previous = self._failures.get(campaign_id)
        self.n_failed_builds += 1
        if previous is None or previous.error != message:
            _log.warning(
                "snapshot build failed for campaign %s (serving %s): %s",
                campaign_id,
                serving,
                message,
                exc_info=error,
            )
        self._failures[campaign_id] = RefreshFailure(
            campaign_id=campaign_id,
            tenant=tenant,
            error=message,
            failures=1 if previous is None else previous.failures + 1,
            since=now if previous is None else previous.since,
            serving=serving,
        )

    def _snapshots(
        self, campaign_id: str, objective: str, ids: list[str]
    ) -> tuple[Snapshot | None, dict[str, Snapshot]]:
        """The campaign-wide snapshot and the per-segment ones for variants ``ids``."""
        if not ids:
            return None, {}
        if len(ids) == 1:
            return Snapshot(tuple(ids), np.ones(1)), {}
        config = self._config
        policy = allocation_policy(config, objective, len(ids))
        frame = self._store.arm_stats(campaign_id, half_life=config.half_life)
        counts = arm_counts(ids, stats_by_variant(frame))
        overall = policy.snapshot(counts, self._rng)
        # Only Thompson sampling has hierarchical per-segment posteriors; baselines
        # allocate one split for every segment, as they do in their usual form.
        if not (config.segment_allocation and isinstance(policy, ThompsonSampling)):
            return overall, {}
        segment_frame = self._store.arm_stats(
            campaign_id, half_life=config.half_life, by_segment=True
        )
        # [hardening: cardinality] busiest segments only; the rest share `overall`
        per_segment = stats_by_segment(segment_frame, config.max_segments_per_campaign)
        if not per_segment:
            return overall, {}
        segment_counts = {s: arm_counts(ids, stats) for s, stats in per_segment.items()}
        weights = policy.weights_by_segment(segment_counts, counts, self._rng)
        return overall, {s: Snapshot(overall.arm_ids, w) for s, w in weights.items()}


def _uniform(ids: list[str]) -> Snapshot | None:
    """An equal split over ``ids`` (None when there are none): the allocation of no evidence."""
    return Snapshot(tuple(ids), np.full(len(ids), 1.0 / len(ids))) if ids else None
