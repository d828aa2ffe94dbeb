"""Live serving tables: per campaign, the allocation snapshots the hot path chooses from.

Each campaign has one :class:`LiveCampaign`, rebuilt from the store's arm statistics by
:meth:`ServingTables.build` and swapped in whole, so a chooser on another thread sees either
the old or the new table, never a mix. The tables are ``adloop.bandits.Snapshot`` objects:
a single decision bisects their cumulative weights (O(log K)), a batch uses their alias
table (O(1) per decision).

Targeting: a variant with ``segments`` serves only requests from those segments; one without
serves every request. So a request from segment ``s`` chooses among the untargeted variants
and those targeted to ``s`` (its *eligible set*), and a request with no segment, or from a
segment no variant targets, among the untargeted ones. Eligibility is settled at build time:
every snapshot of a campaign spans all its servable variants in one order (so ``texts`` align
with each), and a variant ineligible for a snapshot has weight exactly 0 there. ``choose``
still looks up one snapshot and draws, and each decision's probability is its share of the
eligible set. A segment with no eligible variant raises ``NoActiveVariants``.

A build that fails for one campaign (corrupt rows, a policy that rejects its counts, a store
read error) never stops the others: that campaign keeps serving its last snapshot (or a
uniform split when it has none for the current variants) and the failure is kept as a
:class:`RefreshFailure` until a build succeeds, for ``data_quality`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from adloop.bandits import (
    POLICIES,
    Policy,
    Snapshot,
    TextEvidence,
    TextPriorThompson,
    ThompsonSampling,
)
from adloop.optimizer.arm_stats import arm_counts, stats_by_segment, stats_by_variant
from adloop.optimizer.config import TEXT_POLICY, EngineConfig
from adloop.optimizer.decisions import Choice, fresh_ids, request_draw
from adloop.optimizer.errors import CampaignNotFound, HTTPError, InvalidRequest, NoActiveVariants
from adloop.optimizer.events import _then
from adloop.optimizer.text_priors import TenantTextPriors

__all__ = [
    "SERVABLE",
    "LiveCampaign",
    "RefreshFailure",
    "ScaleOut",
    "ServingTables",
    "SnapshotChooser",
    "allocation_policy",
]

_log = logging.getLogger("adloop.engine")

SERVABLE = ("active", "winner")
"""Variant statuses that receive traffic (``pending`` ones await review, ``rejected`` never
serve)."""


@dataclass(slots=True, eq=False)
class LiveCampaign:
    """Everything ``choose`` needs for one campaign; replaced whole on refresh (atomic swap).

    ``overall`` serves requests with no segment or from a segment without a snapshot of its
    own: it weighs the untargeted variants only, and is None when there are none. ``by_segment``
    holds the segments seen in the data and every segment some variant is targeted to.
    ``texts`` are aligned with ``arm_ids``, which every snapshot shares.
    """

    campaign_id: str
    tenant: str
    log_impressions: bool
    texts: list[str]
    arm_ids: tuple[str, ...]
    """The servable variants, in the order of every snapshot's weights."""
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
    eligible: Eligibility | None = None
    """Which of ``arm_ids`` each segment may be shown (None: every one, everywhere)."""

    @property
    def targeted_segments(self) -> tuple[str, ...]:
        """Segments some servable variant is targeted to."""
        return tuple(self.eligible.by_segment) if self.eligible is not None else ()

    def weights(self) -> dict[str, float]:
        """Variant id -> traffic share of the campaign-wide snapshot (untargeted variants)."""
        mask = self.eligible.untargeted if self.eligible is not None else None
        return _shares(self.overall, mask)

    def targeted_weights(self) -> dict[str, dict[str, float]]:
        """Segment -> variant id -> traffic share, for each segment a variant is targeted to
        (only the variants that segment may be shown)."""
        if self.eligible is None:
            return {}
        return {s: _shares(self.by_segment.get(s), m) for s, m in self.eligible.by_segment.items()}


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
    if config.policy == TEXT_POLICY:
        return TextPriorThompson(
            objective, floor=floor, top_two=config.top_two, n_draws=config.n_draws
        )
    return POLICIES[config.policy](objective, floor=floor)


class ServingTables:
    """The live campaigns of one engine, by campaign id, and how to (re)build them.

    The owner serializes :meth:`build` calls (the engine's lock); :meth:`serving` is the
    lock-free hot path. Each live campaign remembers its tenant, which is how the engine
    hides one tenant's campaigns from another.

    On a ``shared`` store (one that other processes write to, e.g. several ``adloop serve``
    on one PostgreSQL database) a campaign this engine does not serve yet is looked up in the
    store and built on first use (under ``lock``), and every live campaign is rebuilt at
    least every ``refresh_interval``, so variants, reviews and events that another process
    wrote reach this one's snapshots.
    """

    def __init__(
        self,
        store: Any,
        config: EngineConfig,
        clock: Callable[[], datetime],
        rng: np.random.Generator,
        *,
        shared: bool = False,
        lock: Any = None,
    ) -> None:
        self._store = store
        self._config = config
        self._text_priors = TenantTextPriors(store) if config.policy == TEXT_POLICY else None
        self._clock = clock
        self._rng = rng
        self._shared = shared
        self._lock = lock if lock is not None else threading.RLock()
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

    def _live_or_load(self, campaign_id: str) -> LiveCampaign | None:
        """The live campaign; on a shared store, one another process created is built now."""
        live = self._live.get(campaign_id)
        if live is not None or not self._shared or not isinstance(campaign_id, str):
            return live
        with self._lock:
            live = self._live.get(campaign_id)
            if live is None and self._store.campaign(campaign_id) is not None:
                self.build_isolated(campaign_id)
                live = self._live.get(campaign_id)
        return live

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
        live = self._live.get(campaign_id) or self._live_or_load(campaign_id)
        if live is None or (tenant is not None and live.tenant != tenant):
            raise CampaignNotFound(campaign_id)
        snapshot = live.overall
        if segment is not None:
            snapshot = live.by_segment.get(segment, snapshot)
        if snapshot is None:
            raise NoActiveVariants(
                campaign_id,
                live.n_pending,
                segment=segment,
                targeted_segments=live.targeted_segments if live.arm_ids else (),
            )
        return live, snapshot

    def visible_row(self, campaign_id: str, tenant: str | None) -> dict[str, Any]:
        """The campaign's store row, if it exists and ``tenant`` (None: any) may see it."""
        live = self._live_or_load(campaign_id)
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
        serve (created by another engine on a store that is not ``shared``, or not yet built)
        and one that does not exist are all hidden, so each gets the same "unknown campaign"
        answer.
        Non-string ids are left to the store, which rejects them with their own reason.
        """
        if tenant is None:
            return set()
        hidden = set()
        for campaign_id in campaign_ids:
            if not isinstance(campaign_id, str):
                continue
            live = self._live_or_load(campaign_id)
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
        """Campaigns whose snapshot has seen enough new activity, or is old and has any.

        On a shared store every old snapshot is due: other processes' events and pool
        changes are activity this engine cannot count.
        """
        interval = timedelta(seconds=self._config.refresh_interval)
        events = self._config.refresh_events
        return [
            campaign_id
            for campaign_id, live in list(self._live.items())
            if live.activity >= events
            or ((live.activity > 0 or self._shared) and now - live.attempted_at >= interval)
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
        if winner and any(v["variant_id"] == winner for v in variants):
            # The winner takes every untargeted request; targeted variants go on competing
            # with it inside their segments (see CampaignLifecycle.declare_winner).
            variants = [v for v in variants if v["variant_id"] == winner or v.get("segments")]
        ids = [v["variant_id"] for v in variants]
        eligible = Eligibility([tuple(v.get("segments") or ()) for v in variants])
        built_at = now
        try:
            text = None
            if self._text_priors is not None and len(ids) > 1:
                text = self._text_priors.evidence(row.get("tenant") or "default", variants)
            overall, by_segment = self._snapshots(
                campaign_id, row.get("objective") or "ctr", ids, eligible, text
            )
        except Exception as error:  # noqa: BLE001 - one campaign's bad data must not stop serving
            previous = self._live.get(campaign_id)
            if previous is not None and previous.arm_ids == tuple(ids) and ids:
                # Same variants as before: their last allocation is still the best guess
                # (a uniform split stays one while builds keep failing).
                overall, by_segment = previous.overall, previous.by_segment
                built_at = previous.built_at
                failing = self._failures.get(campaign_id)
                serving = failing.serving if failing is not None else "last snapshot"
            else:
                (overall, by_segment), serving = _uniform(ids, eligible), "uniform"
            self._record_failure(campaign_id, row["tenant"], error, serving, now)
        else:
            self._failures.pop(campaign_id, None)
            self.n_builds += 1
        self._live[campaign_id] = LiveCampaign(
            campaign_id=campaign_id,
            tenant=row["tenant"],
            log_impressions=not settings.get("impressions_reported_separately", False),
            texts=[v["text"] for v in variants],
            arm_ids=tuple(ids),
            overall=overall,
            by_segment=by_segment,
            built_at=built_at,
            attempted_at=now,
            n_pending=n_pending,
            eligible=eligible,
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
        self,
        campaign_id: str,
        objective: str,
        ids: list[str],
        eligible: Eligibility,
        text: TextEvidence | None = None,
    ) -> tuple[Snapshot | None, dict[str, Snapshot]]:
        """The snapshot of untargeted requests and the per-segment ones for variants ``ids``.

        Each is the policy's allocation over that snapshot's eligible variants (the others
        are inactive arms: weight 0, no share of the floor). ``text``: the variants' text
        evidence, for ``ts_text`` (its untargeted and per-segment-set allocations; segments
        with data of their own are shrunk toward the campaign as with ``ts``).
        """
        if not ids:
            return None, {}
        arm_ids = tuple(ids)
        if len(ids) == 1:
            return _uniform(ids, eligible)
        config = self._config
        policy = allocation_policy(config, objective, len(ids))
        frame = self._store.arm_stats(campaign_id, half_life=config.half_life)
        counts = arm_counts(ids, stats_by_variant(frame))
        everyone = eligible.untargeted

        def snapshot(active: np.ndarray) -> Snapshot:
            if text is not None and isinstance(policy, TextPriorThompson):
                return policy.snapshot(counts.with_active(active), self._rng, text=text)
            return policy.snapshot(counts.with_active(active), self._rng)

        overall = snapshot(everyone) if everyone.any() else None
        by_segment: dict[str, Snapshot] = {}
        # Only Thompson sampling has hierarchical per-segment posteriors; baselines
        # allocate one split for every segment, as they do in their usual form.
        if config.segment_allocation and isinstance(policy, ThompsonSampling):
            segment_frame = self._store.arm_stats(
                campaign_id, half_life=config.half_life, by_segment=True
            )
            # [hardening: cardinality] busiest segments only; the rest share `overall`
            # (targeted segments get a snapshot of their own below all the same)
            per_segment = stats_by_segment(segment_frame, config.max_segments_per_campaign)
            segment_counts = {
                s: arm_counts(ids, stats).with_active(eligible.mask(s))
                for s, stats in per_segment.items()
                if eligible.mask(s).any()
            }
            if segment_counts:
                weights = policy.weights_by_segment(segment_counts, counts, self._rng)
                by_segment = {s: Snapshot(arm_ids, w) for s, w in weights.items()}
        # Targeted segments without data of their own: the campaign's evidence over their
        # eligible set, one allocation per distinct set.
        shared: dict[bytes, Snapshot] = {}
        for segment, mask in eligible.by_segment.items():
            if segment not in by_segment:
                key = mask.tobytes()
                if key not in shared:
                    shared[key] = snapshot(mask)
                by_segment[segment] = shared[key]
        return overall, by_segment


class Eligibility:
    """Which variants each request may be shown, from the variants' target segments.

    ``untargeted`` marks the variants with no segments (they serve every request);
    ``by_segment`` maps each targeted segment to its mask: the untargeted variants and those
    targeted to it. Any other segment's mask is ``untargeted``.

    Example
    -------
    >>> eligible = Eligibility([(), ("mobile",), ("desktop", "mobile")])
    >>> eligible.mask("mobile").tolist(), eligible.mask("tablet").tolist()
    ([True, True, True], [True, False, False])
    """

    def __init__(self, targets: list[tuple[str, ...]]) -> None:
        self.untargeted = np.array([not t for t in targets], dtype=bool)
        self.by_segment: dict[str, np.ndarray] = {}
        for index, segments in enumerate(targets):
            for segment in segments:
                if segment not in self.by_segment:
                    self.by_segment[segment] = self.untargeted.copy()
                self.by_segment[segment][index] = True
        self.by_segment = dict(sorted(self.by_segment.items()))

    def mask(self, segment: str) -> np.ndarray:
        """The variants a request from ``segment`` may be shown."""
        return self.by_segment.get(segment, self.untargeted)


def _uniform(ids: list[str], eligible: Eligibility) -> tuple[Snapshot | None, dict[str, Snapshot]]:
    """Equal splits over each eligible set: the allocation of no evidence (and of one arm)."""

    def split(mask: np.ndarray) -> Snapshot | None:
        return Snapshot(tuple(ids), mask / mask.sum()) if mask.any() else None

    by_segment = {s: split(m) for s, m in eligible.by_segment.items()}
    return split(eligible.untargeted), {s: v for s, v in by_segment.items() if v is not None}


def _shares(snapshot: Snapshot | None, mask: np.ndarray | None) -> dict[str, float]:
    """Variant id -> weight in ``snapshot`` of the variants ``mask`` marks (all when None)."""
    if snapshot is None:
        return {}
    keep = mask.tolist() if mask is not None else [True] * snapshot.n_arms
    pairs = zip(snapshot.arm_ids, snapshot.weights.tolist(), keep, strict=True)
    return {arm_id: weight for arm_id, weight, kept in pairs if kept}


class ScaleOut(Protocol):
    """A serving process's links to a scaled-out deployment (``adloop.scale.serving``).

    Snapshots come from the shared store, posted events and served decisions go to the
    events topic; see the README's "Running on more than one machine".
    """

    ack_timeout_s: float
    """Seconds a posted batch waits for the broker's acknowledgement (then 503)."""

    def snapshot(self, campaign_id: str) -> Any:
        """The newest snapshot held (``variants``, ``texts``, ``weights``, ``tenant``,
        ``version``, ``pick(u)``), or None."""

    def submit(self, events: Any) -> Future:
        """Publish events; a future set once the broker acknowledged them."""

    def decision_id_secret(self) -> bytes:
        """The deployment's key of idempotent decision ids (raises while unreachable)."""

    def log_impression(
        self, campaign_id: str, decision_id: str, variant_id: str, segment: str | None
    ) -> None:
        """Publish a served decision as its impression event."""

    def register(self, tenant: str, campaign_id: str, variants: list[dict[str, Any]]) -> None:
        """Register the variants (``variant_id``, ``text``, ``served``) in the shared store."""

    def metrics(self) -> dict[str, Any]:
        """``snapshot_age_seconds`` and ``snapshot_version`` by campaign,
        ``store_reachable``, ``events_queued``, ``impressions_lost``."""


class SnapshotChooser:
    """Choose from the snapshots of a scaled-out deployment, as :meth:`Engine.choose` does.

    The same calls and answers as the engine's (``choose``, ``choose_many``, a
    :class:`~adloop.optimizer.decisions.Choice` each), so the HTTP routes and the choose fast
    path serve either. The campaign-wide allocation serves every segment (the refresher
    builds one per campaign); the segment is logged with the impression. A request id fixes
    the draw and the decision id by ``(campaign_id, request_id)`` under the deployment's
    secret (kept in the shared store), the same in every process, so a retry sent to another
    host gets the same variant from the same snapshot version and its impression counts once.

    Example::

        chooser = SnapshotChooser(link, seed=0)
        chooser.choose("c_1", tenant="acme").variant_id
    """

    def __init__(
        self, scale_out: ScaleOut, *, seed: int | None = None, max_choose_n: int = 1000
    ) -> None:
        self.scale_out = scale_out
        self.seed = seed
        self.max_choose_n = max_choose_n
        self._random = random.Random(seed).random
        self._fresh_id = fresh_ids()
        self.n_decisions = 0

    def _snapshot(self, campaign_id: str, tenant: str | None) -> Any:
        snap = self.scale_out.snapshot(campaign_id)
        if snap is None or (tenant is not None and snap.tenant != tenant):
            raise CampaignNotFound(campaign_id)
        return snap

    def _served(self, campaign_id: str, snap: Any, u: float, decision_id: str,
                segment: str | None) -> Choice:  # fmt: skip
        index = snap.pick(u)
        variant_id = snap.variants[index]
        self.scale_out.log_impression(campaign_id, decision_id, variant_id, segment)
        return Choice(decision_id, variant_id, snap.texts[index], float(snap.weights[index]))

    def choose(
        self,
        campaign_id: str,
        *,
        segment: str | None = None,
        request_id: str | None = None,
        tenant: str | None = None,
    ) -> Choice:
        """One decision from the campaign's newest snapshot; its impression is published."""
        snap = self._snapshot(campaign_id, tenant)
        if request_id is None:
            u, decision_id = self._random(), self._fresh_id()
        else:
            try:
                secret = self.scale_out.decision_id_secret()
            except Exception as error:  # noqa: BLE001 - answered 503; plain choices go on
                raise HTTPError(
                    503, "store_unavailable",
                    f"choices with a request_id need the deployment's key from the shared "
                    f"store, which is unreachable ({type(error).__name__}); retry later or "
                    "choose without request_id", "request_id", headers={"Retry-After": "5"},
                ) from None  # fmt: skip
            u, decision_id = request_draw(secret, campaign_id, request_id)
        self.n_decisions += 1
        return self._served(campaign_id, snap, u, decision_id, segment)

    def choose_many(
        self,
        campaign_id: str,
        n: int,
        *,
        segment: str | None = None,
        tenant: str | None = None,
    ) -> list[Choice]:
        """``n`` decisions at once, each published as an impression."""
        if not isinstance(n, int) or not 1 <= n <= self.max_choose_n:
            raise InvalidRequest("n", f"must be an integer in 1..{self.max_choose_n}")
        snap = self._snapshot(campaign_id, tenant)
        self.n_decisions += n
        return [
            self._served(campaign_id, snap, self._random(), self._fresh_id(), segment)
            for _ in range(n)
        ]

    def hidden_from(self, tenant: str | None, campaign_ids: Iterable[Any]) -> set[str]:
        """The ids among ``campaign_ids`` that ``tenant`` may not post events to: those with
        no snapshot here, or another tenant's (each answered "unknown campaign")."""
        hidden = set()
        for campaign_id in campaign_ids:
            if not isinstance(campaign_id, str):
                continue
            snap = self.scale_out.snapshot(campaign_id)
            if snap is None or (tenant is not None and snap.tenant != tenant):
                hidden.add(campaign_id)
        return hidden

    def submit_events(self, rows: Any) -> Future:
        """Publish ``rows`` (the store's ``submit_events`` contract): a future of an
        ``AppendResult`` whose ``accepted`` counts the events the broker acknowledged; what
        the aggregator accepts, drops as duplicates or rejects is known only later."""
        from adloop.storage import AppendResult

        return _then(self.scale_out.submit(rows), lambda n: AppendResult(n, 0, 0, []))
