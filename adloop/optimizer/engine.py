"""The in-process engine: campaigns, the variant chooser, event recording and the pool loop.

An ad server (or the simulator) holds one :class:`Engine` per process. Choosing a variant
reads an in-memory allocation snapshot (``adloop.bandits.Snapshot``: bisect for one
decision, alias table for a batch), so the hot path never touches the database; decisions
and impressions are queued for the store's writer thread. Snapshots are rebuilt from the
store's arm statistics every few seconds or every N events, and at once when variants are
added, retired or a winner is declared.

The engine is a facade over one module per job: :mod:`~adloop.optimizer.config` (settings),
:mod:`~adloop.optimizer.serving` (snapshots per campaign), :mod:`~adloop.optimizer.decisions`
(decision queue), :mod:`~adloop.optimizer.events` (recording), :mod:`~adloop.optimizer.views`
and :mod:`~adloop.optimizer.quality` (reports), :mod:`~adloop.optimizer.lifecycle` and
:mod:`~adloop.optimizer.variants` (the variant pool), :mod:`~adloop.optimizer.background`
(the refresh thread).

Example::

    engine = Engine("adloop.duckdb", seed=7)
    view = engine.create_campaign({"product": "Ring", "language": "en",
                                   "variants": [{"text": "Rings for you"},
                                                {"text": "Rings, made to measure"}]})
    choice = engine.choose(view["campaign_id"])
    engine.record([{"event_id": "e1", "type": "click", "campaign_id": view["campaign_id"],
                    "variant_id": choice.variant_id, "decision_id": choice.decision_id,
                    "ts": "2026-01-01T00:00:00"}])
    engine.close()
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from adloop.optimizer.arm_stats import stats_by_variant
from adloop.optimizer.background import BackgroundRefresh
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.decisions import Choice, DecisionLog
from adloop.optimizer.errors import CampaignNotFound, InvalidRequest
from adloop.optimizer.events import campaign_counts, submit_visible
from adloop.optimizer.lifecycle import CampaignLifecycle
from adloop.optimizer.quality import data_quality, srm_check
from adloop.optimizer.serving import ServingTables
from adloop.optimizer.variants import VariantFactory
from adloop.optimizer.views import campaign_summary, campaign_view
from adloop.storage import utc_now

__all__ = ["Choice", "Engine", "EngineConfig", "srm_check"]

_log = logging.getLogger("adloop.engine")


class Engine:
    """Campaigns, the variant chooser and the event recorder over one store.

    Parameters
    ----------
    store:
        Where the store lives, opened and closed by the engine: a DuckDB file path,
        ``duckdb:///abs/path`` or ``postgresql://user@host:port/db`` (see
        ``storage.open_store``); or an open store (``storage.Store``, ``storage.PostgresStore``).
    config:
        :class:`EngineConfig`; defaults are sensible for an ad server.
    clock:
        Returns "now" as a timezone-naive UTC datetime; pass a simulated clock to run
        simulated time (refreshes then happen inline, so runs are reproducible).
    seed:
        Seeds choices and Monte Carlo draws; leave None in production. Decision ids are
        never seeded: they are unguessable (see ``optimizer.decisions``).
    pool:
        The ``generators.GeneratorPool`` that writes new candidates (default: built lazily
        with whatever generators are installed).

    Example::

        with Engine(tmp_path / "a.duckdb", seed=1) as engine:
            campaign = engine.create_campaign(brief, n_candidates=6)
            choice = engine.choose(campaign["campaign_id"], segment="mobile")
    """

    def __init__(
        self,
        store: Any,
        *,
        config: EngineConfig | None = None,
        clock: Callable[[], datetime] | None = None,
        seed: int | None = None,
        pool: Any = None,
    ) -> None:
        from adloop.storage import open_store

        self.config = config or EngineConfig()
        self.seed = seed
        self._clock = clock or utc_now
        # The hot path stamps decisions with time.time() (50 ns) when the clock is real and
        # converts at flush time; a simulated clock is called as given.
        self._stamp: Callable[[], Any] = time.time if clock is None else clock
        if isinstance(store, str | Path):
            self._store = open_store(store, clock=clock)
            self._owns_store = True
        else:
            self._store = store
            self._owns_store = False
        self._pool = pool
        # One random stream per job, so e.g. refreshing more often never changes the ids.
        entropy = seed if seed is not None else secrets.randbits(64)
        self._random = random.Random(entropy).random
        self._choice_rng = np.random.default_rng(entropy + 3)
        self._refresh_rng = np.random.default_rng(entropy + 4)
        self._lock = threading.RLock()
        self._n_decisions = 0
        self._closed = False
        self._decisions = DecisionLog(self._store, epoch_stamps=clock is None)
        self._tables = ServingTables(
            self._store,
            self.config,
            self._clock,
            self._refresh_rng,
            shared=getattr(self._store, "shared", False),
            lock=self._lock,
        )
        self._lifecycle = CampaignLifecycle(
            store=self._store,
            tables=self._tables,
            factory=VariantFactory(
                random.Random(entropy + 2),
                lambda: self.pool,
                self.config.generation_time_budget,
            ),
            config=self.config,
            clock=self._clock,
            rng=self._refresh_rng,
            lock=self._lock,
            refresh=self.refresh,
        )
        # One campaign that cannot be built (corrupt rows) must not stop the others or the
        # engine: it serves a uniform split and is reported (``refresh_failures``).
        for campaign in self._store.campaigns():
            self._tables.build_isolated(campaign["campaign_id"])
        background = self.config.background
        if background is None:
            background = clock is None
        self._background: BackgroundRefresh | None = None
        if background:
            self._background = BackgroundRefresh(
                self._decisions.flush,
                self._refresh_due,
                flush_interval=self.config.flush_interval,
                refresh_interval=self.config.refresh_interval,
            )

    # ------------------------------------------------------------------ properties

    @property
    def store(self) -> Any:
        """The underlying ``storage.Store`` (source of truth)."""
        return self._store

    @property
    def clock(self) -> Callable[[], datetime]:
        """The engine's clock."""
        return self._clock

    @property
    def pool(self) -> Any:
        """The generator pool (built on first use, on the promoted model version if any)."""
        if self._pool is None:
            from adloop.generators import GeneratorPool

            self._pool = GeneratorPool(model_dir=self.promoted_model_dir())
        return self._pool

    def promoted_model_dir(self) -> Path | None:
        """The directory of the model version promoted last by retraining, if it still exists."""
        current = self._store.current_model()
        if current and current.get("path") and Path(current["path"]).is_dir():
            return Path(current["path"])
        return None

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: decisions, refreshes, queued decisions, snapshot ages.

        ``refresh_failures`` counts every failed snapshot build so far (all campaigns);
        ``refresh_failing`` maps each campaign whose last build failed to how many builds
        in a row have failed (details: :meth:`refresh_failures`).
        """
        return {
            "decisions": self._n_decisions,
            "refreshes": self._tables.n_builds,
            "refresh_failures": self._tables.n_failed_builds,
            "refresh_failing": {f.campaign_id: f.failures for f in self._tables.failures()},
            "pending_decisions": len(self._decisions),
            "campaigns": len(self._tables),
            "snapshot_age_seconds": self._tables.ages(self._clock()),
        }

    def refresh_failures(self, tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Campaigns (of ``tenant``, or all) whose last snapshot build failed, and why.

        Each maps to ``error`` (exception type and message), ``failures`` (consecutive
        failed builds), ``since`` (ISO time of the first) and ``serving`` (``"last
        snapshot"``, ``"uniform"`` or ``"nothing"``). Builds are retried on the usual
        refresh schedule; a campaign leaves this map when one succeeds.
        """
        return {
            f.campaign_id: f.as_dict()
            for f in self._tables.failures()
            if tenant is None or f.tenant == tenant
        }

    # ------------------------------------------------------------------ campaigns

    def create_campaign(
        self,
        brief: Any,
        *,
        tenant: str = "default",
        n_candidates: int = 8,
        objective: str = "ctr",
        variants: Sequence[Mapping[str, Any]] | None = None,
        impressions_reported_separately: bool = False,
        name: str | None = None,
        seed: int | None = None,
        auto_approve: bool = False,
        per_segment: bool = False,
    ) -> dict[str, Any]:
        """Create a campaign from a brief and its first pool of variants; return its view.

        Variants listed in ``variants`` (or under a ``variants`` key of a brief dict) are used
        as given and serve at once; otherwise the generator pool writes ``n_candidates`` of
        them, which start ``pending`` and serve only once approved (:meth:`review`), unless
        ``auto_approve`` (or an ``auto_approve: true`` key of a brief dict) is set: then every
        generated variant of the campaign, refills included, serves without review. Creation
        never needs a language model: the pool falls back to the generators it has.
        ``per_segment`` writes the generated copy for the brief's segments in turn, each
        variant targeted to its segment (a listed variant may name its own ``segments``).
        """
        campaign_id = self._lifecycle.create(
            brief,
            tenant=tenant,
            n_candidates=n_candidates,
            objective=objective,
            variants=variants,
            impressions_reported_separately=impressions_reported_separately,
            name=name,
            seed=seed,
            auto_approve=auto_approve,
            per_segment=per_segment,
        )
        return self.campaign(campaign_id)

    def campaigns(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Summaries of the campaigns (of one tenant when given), oldest first."""
        return [
            campaign_summary(row, self._store.variants(row["campaign_id"]))
            for row in self._store.campaigns(tenant)
        ]

    def campaign(self, campaign_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """The campaign with per-variant counts, posteriors, winner and data quality."""
        row = self._tables.visible_row(campaign_id, tenant)
        self.flush()
        return campaign_view(
            self._store,
            row,
            self._tables.get(campaign_id),
            config=self.config,
            rng=self._refresh_rng,
            lock=self._lock,
            refresh_failure=self._tables.failure(campaign_id),
        )

    def data_quality(self, campaign_id: str) -> dict[str, Any]:
        """Orphans, duplicates, out-of-range values, refresh failures and the SRM check."""
        stats = stats_by_variant(self._store.arm_stats(campaign_id))
        failure = self._tables.failure(campaign_id)
        return data_quality(self._store, campaign_id, stats, self.config, failure)

    # ------------------------------------------------------------------ choosing

    def choose(
        self,
        campaign_id: str,
        *,
        segment: str | None = None,
        request_id: str | None = None,
        tenant: str | None = None,
    ) -> Choice:
        """Choose a variant for one impression from the in-memory snapshot (no I/O).

        The same ``request_id`` (per campaign) returns the same decision, so a retried ad
        request neither shows a different ad nor logs a second impression. A variant targeted
        to segments is chosen only for requests from them (``optimizer.serving``).
        """
        live, snapshot = self._tables.serving(campaign_id, segment, tenant)
        if request_id is not None:
            choice = self._decisions.recall(campaign_id, request_id)
            if choice is not None:
                return choice
            u, decision_id = self._decisions.request_draw(campaign_id, request_id)
            index, probability = snapshot.choose(u)
            choice = Choice(decision_id, snapshot.arm_ids[index], live.texts[index], probability)
            self._decisions.log_for_request(
                campaign_id, request_id, choice, segment, self._stamp(), live.log_impressions
            )
        else:
            index, probability = snapshot.choose(self._random())
            choice = self._decisions.log(
                campaign_id,
                snapshot.arm_ids[index],
                live.texts[index],
                probability,
                segment,
                self._stamp(),
                live.log_impressions,
            )
        live.activity += 1
        self._n_decisions += 1
        return choice

    def choose_many(
        self,
        campaign_id: str,
        n: int,
        *,
        segment: str | None = None,
        tenant: str | None = None,
    ) -> list[Choice]:
        """Choose ``n`` variants at once (one vectorized draw); each logged as a decision."""
        if not isinstance(n, int) or not 1 <= n <= self.config.max_choose_n:
            raise InvalidRequest("n", f"must be an integer in 1..{self.config.max_choose_n}")
        live, snapshot = self._tables.serving(campaign_id, segment, tenant)
        indices, probabilities = snapshot.choose_many(n, self._choice_rng)
        stamp = self._stamp()
        log, ids, texts = self._decisions.log, snapshot.arm_ids, live.texts
        out = [
            log(campaign_id, ids[i], texts[i], p, segment, stamp, live.log_impressions)
            for i, p in zip(indices.tolist(), probabilities.tolist(), strict=True)
        ]
        live.activity += n
        self._n_decisions += n
        return out

    # ------------------------------------------------------------------ events

    def record(self, events: Any, *, tenant: str | None = None) -> Any:
        """Append events (impressions, clicks, conversions); return after they are committed.

        ``events`` is a list of dicts, a polars DataFrame or an Arrow table (the fastest).
        Rows for campaigns outside ``tenant`` are rejected as unknown, exactly like rows for
        campaigns that do not exist; everything else follows ``Store.append_events``
        (idempotent on ``event_id``, bad rows rejected with a reason, good rows kept).
        """
        result = self.submit_record(events, tenant=tenant).result()
        if self._background is None:
            self._refresh_due()
        return result

    def submit_record(self, events: Any, *, tenant: str | None = None) -> Future:
        """:meth:`record` without waiting: a future that resolves after the COMMIT.

        The result is the same ``AppendResult``; an async caller awaits it without holding
        a thread (``await asyncio.wrap_future(engine.submit_record(rows))``), which is how
        the HTTP service acknowledges a batch only once it is durable.
        """
        rows, counts = campaign_counts(events)
        hidden_ids = self._tables.hidden_from(tenant, counts)
        self._tables.add_activity({c: n for c, n in counts.items() if c not in hidden_ids})
        return submit_visible(self._store, rows, counts, hidden_ids)

    # ------------------------------------------------------------------ pool changes

    def add_variants(
        self,
        campaign_id: str,
        variants: Sequence[Mapping[str, Any]] | None = None,
        *,
        n: int | None = None,
        tenant: str | None = None,
        seed: int | None = None,
        segment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add variants: given ones (each may name its ``segments``) serve at once; ``n``
        generated ones, written for ``segment`` and targeted to it when given, await review
        (as at creation) unless the campaign auto-approves."""
        return self._lifecycle.add_variants(
            campaign_id, variants, n=n, tenant=tenant, seed=seed, segment=segment
        )

    def review(
        self,
        campaign_id: str,
        variant_id: str,
        action: str,
        *,
        reviewer: str,
        note: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Approve or reject a variant (``action``: ``"approve"`` or ``"reject"``).

        Approving a pending (or rejected) variant makes it serve from the next decision on;
        rejecting a pending one keeps it from ever serving. ``reviewer`` (a tenant and key id,
        or a user name), the time and the ``note`` are recorded; the review is returned with
        the variant's new ``status``; ``tenant`` limits it to that tenant's campaigns. Errors:
        see ``CampaignLifecycle.review``.
        """
        return self._lifecycle.review(
            campaign_id, variant_id, action, reviewer=reviewer, note=note, tenant=tenant
        )

    def retire(self, campaign_id: str, variant_id: str, *, tenant: str | None = None) -> None:
        """Retire one variant: it gets no more traffic from the next decision on."""
        self._lifecycle.retire(campaign_id, variant_id, tenant=tenant)

    def retire_and_refill(self, campaign_id: str, *, seed: int | None = None) -> dict[str, Any]:
        """Retire clear losers (bandits' retire rule) and let the generators refill the pool.

        New candidates are written with the campaign's existing texts (so near-duplicates
        are filtered out) and its current leaders as parents for recombination.
        """
        return self._lifecycle.retire_and_refill(campaign_id, seed=seed)

    def declare_winner(
        self, campaign_id: str, *, tenant: str | None = None
    ) -> dict[str, Any] | None:
        """Declare a winner when the bandit's stopping rule allows it; else return None.

        A declared winner then gets all traffic and the campaign is marked completed. With
        targeting, only untargeted variants can win and targeted ones keep their segments
        (``optimizer.lifecycle``).
        """
        return self._lifecycle.declare_winner(campaign_id, tenant=tenant)

    # ------------------------------------------------------------------ refresh

    def refresh(self, campaign_id: str | None = None) -> None:
        """Re-read arm statistics and rebuild allocation snapshots (one campaign or all).

        A campaign whose allocation cannot be computed keeps serving its last snapshot and
        is listed by :meth:`refresh_failures`. Refreshing one campaign raises the store's
        error if it cannot be read at all; refreshing all of them goes on to the others.
        """
        if campaign_id is not None:
            if campaign_id not in self._tables:
                raise CampaignNotFound(campaign_id)
            self.flush()
            with self._lock:
                self._tables.build(campaign_id)
            return
        self.flush()
        self._rebuild_each(self._tables.campaign_ids())

    def flush(self) -> None:
        """Hand queued decisions to the store and wait until everything is committed."""
        self._decisions.flush()
        self._store.flush()

    def _refresh_due(self) -> None:
        """Rebuild the snapshots that enough new activity or time has made stale."""
        due = self._tables.due(self._clock())
        if not due:
            return
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - stale stats beat frozen ones; the flush is retried
            _log.debug("flush before refresh failed; refreshing from committed data")
        self._rebuild_each(due)

    def _rebuild_each(self, campaign_ids: Sequence[str]) -> None:
        """Rebuild each campaign on its own: one failure never stops the others.

        The lock is taken per campaign, not around the loop, so a request waiting for it
        (a campaign creation, a pool change) waits for one build, never for all of them.
        """
        for campaign_id in campaign_ids:
            with self._lock:
                self._tables.build_isolated(campaign_id)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop background work, commit every queued decision, and close an owned store."""
        if self._closed:
            return
        self._closed = True
        if self._background is not None:
            self._background.stop()
        self.flush()
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
