"""Live serving tables: per campaign, the allocation snapshots the hot path chooses from.

Each campaign has one :class:`LiveCampaign`, rebuilt from the store's arm statistics by
:meth:`ServingTables.build` and swapped in whole, so a chooser on another thread sees either
the old or the new table, never a mix. The tables are ``adloop.bandits.Snapshot`` objects:
a single decision bisects their cumulative weights (O(log K)), a batch uses their alias
table (O(1) per decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from adloop.bandits import POLICIES, Policy, Snapshot, ThompsonSampling
from adloop.optimizer.arm_stats import arm_counts, stats_by_segment, stats_by_variant
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.errors import CampaignNotFound, NoActiveVariants

__all__ = ["SERVABLE", "LiveCampaign", "ServingTables", "allocation_policy"]

SERVABLE = ("active", "winner")
"""Variant statuses that receive traffic."""


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
    activity: int = 0
    """Decisions + events since this snapshot was built (drives ``refresh_events``)."""

    def weights(self) -> dict[str, float]:
        """Variant id -> traffic share of the campaign-wide snapshot."""
        if self.overall is None:
            return {}
        return dict(zip(self.overall.arm_ids, self.overall.weights.tolist(), strict=True))


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
        self.n_builds = 0
        """How many snapshots have been built (a monitoring counter)."""

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
            raise NoActiveVariants(campaign_id)
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
        """The ids among ``campaign_ids`` that belong to a tenant other than ``tenant``.

        Unknown ids are not hidden: the store rejects them as unknown anyway.
        """
        if tenant is None:
            return set()
        hidden = set()
        for campaign_id in campaign_ids:
            live = self._live.get(campaign_id) if isinstance(campaign_id, str) else None
            if live is not None and live.tenant != tenant:
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
            if live.activity >= events or (live.activity > 0 and now - live.built_at >= interval)
        ]

    def ages(self, now: datetime) -> dict[str, float]:
        """Seconds since each campaign's snapshot was built."""
        return {
            campaign_id: max(0.0, (now - live.built_at).total_seconds())
            for campaign_id, live in list(self._live.items())
        }

    def build(self, campaign_id: str) -> None:
        """Build the campaign's snapshots from the store and swap them in."""
        row = self._store.campaign(campaign_id)
        if row is None:
            raise CampaignNotFound(campaign_id)
        settings = row.get("settings") or {}
        built_at = self._clock()
        variants = self._store.variants(campaign_id, statuses=SERVABLE)
        winner = row.get("winner_variant_id")
        if winner:
            variants = [v for v in variants if v["variant_id"] == winner] or variants
        ids = [v["variant_id"] for v in variants]
        overall, by_segment = self._snapshots(campaign_id, row.get("objective") or "ctr", ids)
        self._live[campaign_id] = LiveCampaign(
            campaign_id,
            row["tenant"],
            not settings.get("impressions_reported_separately", False),
            [v["text"] for v in variants],
            overall,
            by_segment,
            built_at,
        )
        self.n_builds += 1

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
        per_segment = stats_by_segment(segment_frame)
        if not per_segment:
            return overall, {}
        segment_counts = {s: arm_counts(ids, stats) for s, stats in per_segment.items()}
        weights = policy.weights_by_segment(segment_counts, counts, self._rng)
        return overall, {s: Snapshot(overall.arm_ids, w) for s, w in weights.items()}
