"""The in-process engine: campaigns, the variant chooser, event recording and the pool loop.

An ad server (or the simulator) holds one :class:`Engine` per process. Choosing a variant
reads an in-memory allocation snapshot (cumulative weights + bisect, O(log K)), so the hot
path never touches the database; decisions and impressions are queued for the store's
writer thread. Snapshots are rebuilt from the store's arm statistics every few seconds or
every N events, and at once when variants are added, retired or a winner is declared.

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

import hashlib
import random
import secrets
import threading
import time
from bisect import bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from adloop.optimizer.errors import (
    CampaignNotFound,
    InvalidRequest,
    NoActiveVariants,
    VariantNotFound,
)

__all__ = ["Choice", "Engine", "EngineConfig", "srm_check"]

OBJECTIVES = ("ctr", "cvr", "value")
SERVABLE = ("active", "winner")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


POLICIES = ("ts", "uniform", "egreedy", "ucb1")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How the engine allocates, refreshes and judges campaigns (checked at construction).

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
    """Allocation policy: ``ts`` (Thompson sampling), or a baseline for comparisons:
    ``uniform`` (equal split), ``egreedy`` (epsilon-greedy, 10 %) or ``ucb1``."""
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

    def __post_init__(self) -> None:
        positive = {
            "refresh_interval": self.refresh_interval,
            "flush_interval": self.flush_interval,
            "refresh_events": self.refresh_events,
            "n_draws": self.n_draws,
            "max_choose_n": self.max_choose_n,
        }
        for name, value in positive.items():
            if not value > 0:
                raise InvalidRequest(name, f"must be > 0, got {value!r}")
        for name in ("floor", "retire_floor", "srm_alpha"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InvalidRequest(name, f"must be in [0, 1), got {value!r}")
        if not 0.5 <= self.winner_threshold < 1.0:
            raise InvalidRequest(
                "winner_threshold", f"must be in [0.5, 1), got {self.winner_threshold!r}"
            )
        if not 0.0 < self.value_remaining < 1.0:
            raise InvalidRequest(
                "value_remaining", f"must be in (0, 1), got {self.value_remaining!r}"
            )
        for name in ("retire_min_impressions", "srm_min_impressions"):
            if getattr(self, name) < 0:
                raise InvalidRequest(name, f"must be >= 0, got {getattr(self, name)!r}")
        if self.generation_time_budget is not None and not self.generation_time_budget > 0:
            raise InvalidRequest(
                "generation_time_budget",
                f"must be > 0 or None, got {self.generation_time_budget!r}",
            )
        if self.policy not in POLICIES:
            raise InvalidRequest(
                "policy", f"must be one of {', '.join(POLICIES)}, got {self.policy!r}"
            )
        if self.half_life is not None and self.half_life <= timedelta(0):
            raise InvalidRequest("half_life", f"must be positive, got {self.half_life!r}")


class Choice(NamedTuple):
    """One decision: which variant to show, and the probability it had of being chosen."""

    decision_id: str
    variant_id: str
    text: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """The decision as the HTTP API returns it."""
        return {
            "decision_id": self.decision_id,
            "variant_id": self.variant_id,
            "text": self.text,
            "probability": self.probability,
        }


class _Table:
    """One allocation snapshot in the form the hot path wants: plain Python lists."""

    __slots__ = ("cumulative", "probabilities", "texts", "total", "variant_ids", "weights")

    def __init__(self, variant_ids: list[str], texts: list[str], weights: np.ndarray) -> None:
        self.variant_ids = variant_ids
        self.texts = texts
        self.weights = np.asarray(weights, dtype=float)
        self.probabilities = [float(w) for w in self.weights]
        # Cumulative sums as a Python list: bisect on a list is ~100 ns, far below a
        # numpy call's fixed overhead for a single decision.
        self.cumulative = list(accumulate(self.probabilities))
        self.total = self.cumulative[-1] if self.cumulative else 0.0


class _Live:
    """Everything ``choose`` needs for one campaign; replaced whole on refresh (atomic swap)."""

    __slots__ = (
        "activity",
        "built_at",
        "by_segment",
        "campaign_id",
        "log_impressions",
        "overall",
        "tenant",
    )

    def __init__(
        self,
        campaign_id: str,
        tenant: str,
        log_impressions: bool,
        overall: _Table,
        by_segment: dict[str, _Table],
        built_at: datetime,
    ) -> None:
        self.campaign_id = campaign_id
        self.tenant = tenant
        self.log_impressions = log_impressions
        self.overall = overall
        self.by_segment = by_segment
        self.built_at = built_at
        self.activity = 0  # decisions + events since this snapshot was built


def srm_check(
    impressions: Mapping[str, float],
    expected_shares: Mapping[str, float],
    *,
    alpha: float = 0.001,
    min_impressions: int = 100,
) -> dict[str, Any]:
    """Sample-ratio-mismatch test: do observed impressions follow the logged assignments?

    ``expected_shares`` maps each variant to the summed assignment weight the engine logged
    for it (proportional to the impressions it should have received). A chi-square
    goodness-of-fit test compares observed impressions with that split; ``flagged`` is set
    when the p-value is below ``alpha``. A broken integration (impressions dropped or
    double-reported for some variants) shows up here long before it skews the results.

    Example::

        srm_check({"a": 500, "b": 300}, {"a": 400, "b": 400})["flagged"]  # True
    """
    from scipy.stats import chi2

    variant_ids = [v for v, share in expected_shares.items() if share > 0]
    observed = np.array([float(impressions.get(v, 0.0)) for v in variant_ids])
    unexpected = float(
        sum(n for v, n in impressions.items() if expected_shares.get(v, 0.0) <= 0 and n > 0)
    )
    total = float(observed.sum())
    result: dict[str, Any] = {
        "test": "chi-square of observed impressions vs logged assignments",
        "alpha": alpha,
        "impressions": int(total),
        "impressions_without_assignment": int(unexpected),
        "chi2": None,
        "p_value": None,
        "flagged": False,
    }
    if len(variant_ids) < 2 or total < min_impressions:
        result["reason"] = (
            f"not enough data (needs >= 2 assigned variants and >= {min_impressions} impressions)"
        )
        return result
    shares = np.array([float(expected_shares[v]) for v in variant_ids])
    expected = total * shares / shares.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    p_value = float(chi2.sf(statistic, df=len(variant_ids) - 1))
    result.update(chi2=statistic, p_value=p_value, flagged=bool(p_value < alpha))
    result["reason"] = (
        "impressions do not follow the assignment probabilities: check that every decision's "
        "impression is reported once"
        if result["flagged"]
        else "ok"
    )
    return result


class Engine:
    """Campaigns, the variant chooser and the event recorder over one store.

    Parameters
    ----------
    store:
        A path to a DuckDB file (opened and closed by the engine) or an open ``storage.Store``.
    config:
        :class:`EngineConfig`; defaults are sensible for an ad server.
    clock:
        Returns "now" as a timezone-naive UTC datetime; pass a simulated clock to run
        simulated time (refreshes then happen inline, so runs are reproducible).
    seed:
        Seeds choices, decision ids and Monte Carlo draws. Leave None in production:
        decision ids double as impression event ids and must not repeat across runs.
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
        # Import the bandit maths (scipy) now, so the first request does not pay for it.
        from adloop import bandits  # noqa: F401
        from adloop.storage import Store

        self.config = config or EngineConfig()
        self.seed = seed
        self._clock = clock or _utcnow
        # The hot path stamps decisions with time.time() (50 ns) when the clock is real and
        # converts at flush time; a simulated clock is called as given.
        self._stamp: Callable[[], Any] = time.time if clock is None else clock
        self._epoch_stamps = clock is None
        if isinstance(store, str | Path):
            self._store = Store(Path(store), clock=clock)
            self._owns_store = True
        else:
            self._store = store
            self._owns_store = False
        self._pool = pool
        entropy = seed if seed is not None else secrets.randbits(64)
        self._random = random.Random(entropy).random
        self._getrandbits = random.Random(entropy + 1).getrandbits
        self._ids = random.Random(entropy + 2)
        self._choice_rng = np.random.default_rng(entropy + 3)
        self._refresh_rng = np.random.default_rng(entropy + 4)
        self._lock = threading.RLock()
        self._live: dict[str, _Live] = {}
        self._tenants: dict[str, str] = {}
        self._pending: deque = deque()
        self._recent_requests: OrderedDict[tuple[str, str], Choice] = OrderedDict()
        self._counters = {"decisions": 0, "refreshes": 0}
        self._closed = False
        for campaign in self._store.campaigns():
            self._tenants[campaign["campaign_id"]] = campaign["tenant"]
            self._rebuild(campaign["campaign_id"])
        background = self.config.background
        if background is None:
            background = clock is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._maintain, name="adloop-engine-refresh", daemon=True
            )
            self._thread.start()

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
        """Counters for monitoring: decisions, refreshes, queued decisions, snapshot ages."""
        now = self._clock()
        return {
            "decisions": self._counters["decisions"],
            "refreshes": self._counters["refreshes"],
            "pending_decisions": len(self._pending),
            "campaigns": len(self._live),
            "snapshot_age_seconds": {
                cid: max(0.0, (now - live.built_at).total_seconds())
                for cid, live in list(self._live.items())
            },
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
    ) -> dict[str, Any]:
        """Create a campaign from a brief and its first pool of variants; return its view.

        Variants listed in ``variants`` (or under a ``variants`` key of a brief dict) are used
        as given; otherwise the generator pool writes ``n_candidates`` of them. Creation never
        needs a language model: the pool falls back to the generators it has.
        """
        if objective not in OBJECTIVES:
            raise InvalidRequest("objective", f"must be one of {OBJECTIVES}, got {objective!r}")
        if not isinstance(n_candidates, int) or not 1 <= n_candidates <= 200:
            raise InvalidRequest(
                "n_candidates", f"must be an integer in 1..200, got {n_candidates!r}"
            )
        if not isinstance(tenant, str) or not tenant:
            raise InvalidRequest("tenant", "must be a non-empty string")
        brief_input = brief
        listed: Any = None
        if isinstance(brief, Mapping):
            brief_input = {k: v for k, v in brief.items() if k != "variants"}
            listed = brief.get("variants")
        brief_obj = _load_brief(brief_input)
        explicit = variants if variants is not None else listed
        campaign_id = self._new_id("c_", 12)
        now = self._clock()
        if explicit:
            rows = self._manual_variants(campaign_id, explicit, brief_obj, now, "variants")
        else:
            result = self.pool.generate(
                brief_obj,
                n_candidates,
                seed=self._seed_for(seed, campaign_id),
                time_budget_s=self.config.generation_time_budget,
            )
            rows = _in_order([self._candidate_row(campaign_id, c, now) for c in result.candidates])
            if not rows:
                raise InvalidRequest(
                    "brief",
                    "the generators produced no valid candidate "
                    f"(drops: {dict(result.drop_counts)}); relax the limits or list variants",
                )
        campaign = {
            "campaign_id": campaign_id,
            "tenant": tenant,
            "name": name or str(getattr(brief_obj, "product", campaign_id)),
            "brief": brief_obj.model_dump(mode="json"),
            "objective": objective,
            "status": "active",
            "settings": {
                "n_candidates": max(n_candidates, len(rows)) if not explicit else len(rows),
                "impressions_reported_separately": bool(impressions_reported_separately),
            },
            "created_at": now,
        }
        with self._lock:
            self._store.insert_campaign(campaign, rows)
            self._tenants[campaign_id] = tenant
            self._rebuild(campaign_id)
        return self.campaign(campaign_id)

    def campaigns(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Summaries of the campaigns (of one tenant when given), oldest first."""
        out = []
        for row in self._store.campaigns(tenant):
            variants = self._store.variants(row["campaign_id"])
            out.append(
                {
                    "campaign_id": row["campaign_id"],
                    "tenant": row["tenant"],
                    "name": row.get("name"),
                    "objective": row.get("objective"),
                    "status": row["status"],
                    "winner": row.get("winner_variant_id"),
                    "n_variants": len(variants),
                    "n_active": sum(v["status"] in SERVABLE for v in variants),
                    "created_at": _iso(row.get("created_at")),
                }
            )
        return out

    def campaign(self, campaign_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """The campaign with per-variant counts, posteriors, winner and data quality."""
        from adloop.bandits import ArmCounts, ThompsonSampling, posterior_summary

        row = self._campaign_row(campaign_id, tenant)
        self._flush_decisions()
        self._store.flush()
        variants = self._store.variants(campaign_id)
        stats = _stats_by_variant(self._store.arm_stats(campaign_id))
        ids = [v["variant_id"] for v in variants]
        counts = _counts(ArmCounts, ids, stats)
        objective = row.get("objective") or "ctr"
        with self._lock:
            summary = posterior_summary(counts, objective, rng=self._refresh_rng) if ids else {}
            servable = [i for i, v in enumerate(variants) if v["status"] in SERVABLE]
            p_best = np.zeros(len(ids))
            if servable:
                sub = _counts(ArmCounts, [ids[i] for i in servable], stats)
                policy = ThompsonSampling(objective, n_draws=self.config.n_draws)
                p_best[servable] = policy.probability_best(sub, self._refresh_rng)
        out_variants = []
        for i, v in enumerate(variants):
            s = stats.get(v["variant_id"], {})
            out_variants.append(
                {
                    "variant_id": v["variant_id"],
                    "text": v.get("text"),
                    "headline": v.get("headline"),
                    "description": v.get("description"),
                    "status": v["status"],
                    "generator": v.get("generator"),
                    "model_version": v.get("model_version"),
                    "parent_ids": list(v.get("parent_ids") or []),
                    "impressions": int(s.get("impressions", 0)),
                    "clicks": int(s.get("clicks", 0)),
                    "conversions": int(s.get("conversions", 0)),
                    "value": float(s.get("value", 0.0)),
                    "posterior_mean": float(summary["mean"][i]),
                    "interval_95": [float(summary["low"][i]), float(summary["high"][i])],
                    "probability_best": float(p_best[i]),
                }
            )
        live = self._live.get(campaign_id)
        settings = row.get("settings") or {}
        return {
            "campaign_id": campaign_id,
            "tenant": row["tenant"],
            "name": row.get("name"),
            "objective": objective,
            "status": row["status"],
            "winner": row.get("winner_variant_id"),
            "impressions_reported_separately": bool(
                settings.get("impressions_reported_separately", False)
            ),
            "created_at": _iso(row.get("created_at")),
            "brief": row.get("brief"),
            "variants": out_variants,
            "data_quality": self.data_quality(campaign_id, _stats=stats),
            "snapshot": {
                "built_at": _iso(live.built_at) if live else None,
                "weights": dict(
                    zip(live.overall.variant_ids, live.overall.probabilities, strict=True)
                )
                if live
                else {},
                "segments": sorted(live.by_segment) if live else [],
            },
        }

    def data_quality(self, campaign_id: str, *, _stats: dict | None = None) -> dict[str, Any]:
        """Orphans, duplicates and the sample-ratio-mismatch check for one campaign."""
        quality = dict(self._store.data_quality(campaign_id))
        stats = (
            _stats if _stats is not None else _stats_by_variant(self._store.arm_stats(campaign_id))
        )
        decisions = self._store.decision_stats(campaign_id)
        # Expected impressions follow the logged assignments: each decision is one draw from
        # the allocation in force, so its variant's decision count is the expected share.
        assigned = {
            row["variant_id"]: float(row["decisions"]) for row in decisions.iter_rows(named=True)
        }
        impressions = {v: float(s["impressions"]) for v, s in stats.items()}
        quality["srm"] = srm_check(
            impressions,
            assigned,
            alpha=self.config.srm_alpha,
            min_impressions=self.config.srm_min_impressions,
        )
        quality["decisions"] = int(
            sum(int(r["decisions"]) for r in decisions.iter_rows(named=True))
        )
        return quality

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
        request neither shows a different ad nor logs a second impression.
        """
        live, table = self._serving_table(campaign_id, segment, tenant)
        if request_id is not None:
            return self._choose_for_request(live, table, segment, request_id)
        index = bisect_right(table.cumulative, self._random() * table.total)
        if index >= len(table.cumulative):  # u * total rounding onto the last edge
            index = len(table.cumulative) - 1
        live.activity += 1
        self._counters["decisions"] += 1
        return self._log_decision(live, table, index, segment, self._stamp())

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
        live, table = self._serving_table(campaign_id, segment, tenant)
        draws = self._choice_rng.random(n) * table.total
        indices = np.searchsorted(np.asarray(table.cumulative), draws, side="right")
        np.minimum(indices, len(table.cumulative) - 1, out=indices)
        now = self._stamp()
        out = [self._log_decision(live, table, i, segment, now) for i in indices.tolist()]
        live.activity += n
        self._counters["decisions"] += n
        return out

    def _log_decision(
        self, live: _Live, table: _Table, index: int, segment: str | None, stamp: Any
    ) -> Choice:
        """Queue the decision for the store (flushed off the hot path) and return it."""
        decision_id = f"d_{self._getrandbits(64):016x}"
        probability = table.probabilities[index]
        variant_id = table.variant_ids[index]
        self._pending.append(
            (
                decision_id,
                live.campaign_id,
                variant_id,
                segment,
                probability,
                stamp,
                live.log_impressions,
            )
        )
        return Choice(decision_id, variant_id, table.texts[index], probability)

    def _serving_table(
        self, campaign_id: str, segment: str | None, tenant: str | None
    ) -> tuple[_Live, _Table]:
        """The live campaign and the allocation table that serves ``segment`` (hot path)."""
        live = self._live.get(campaign_id)
        if live is None or (tenant is not None and live.tenant != tenant):
            raise CampaignNotFound(campaign_id)
        table = live.overall
        if segment is not None:
            table = live.by_segment.get(segment, table)
        if not table.cumulative:
            raise NoActiveVariants(campaign_id)
        return live, table

    def _choose_for_request(
        self, live: _Live, table: _Table, segment: str | None, request_id: str
    ) -> Choice:
        key = (live.campaign_id, request_id)
        cached = self._recent_requests.get(key)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(
            f"{live.campaign_id}\x00{request_id}".encode(), digest_size=16
        ).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        index = min(bisect_right(table.cumulative, u * table.total), len(table.cumulative) - 1)
        choice = Choice(
            "d_" + digest[8:].hex(),
            table.variant_ids[index],
            table.texts[index],
            table.probabilities[index],
        )
        self._pending.append(
            (
                choice.decision_id,
                live.campaign_id,
                choice.variant_id,
                segment,
                choice.probability,
                self._stamp(),
                live.log_impressions,
            )
        )
        self._recent_requests[key] = choice
        if len(self._recent_requests) > 100_000:
            self._recent_requests.popitem(last=False)
        live.activity += 1
        self._counters["decisions"] += 1
        return choice

    # ------------------------------------------------------------------ events

    def record(self, events: Any, *, tenant: str | None = None) -> Any:
        """Append events (impressions, clicks, conversions); return after they are committed.

        ``events`` is a list of dicts, a polars DataFrame or an Arrow table (the fastest).
        Rows for campaigns outside ``tenant`` are rejected as unknown, exactly like rows for
        campaigns that do not exist; everything else follows ``Store.append_events``
        (idempotent on ``event_id``, bad rows rejected with a reason, good rows kept).
        """
        result = self.submit_record(events, tenant=tenant).result()
        if self._thread is None:
            self._maybe_refresh()
        return result

    def submit_record(self, events: Any, *, tenant: str | None = None) -> Future:
        """:meth:`record` without waiting: a future that resolves after the COMMIT.

        The result is the same ``AppendResult``; an async caller awaits it without holding
        a thread (``await asyncio.wrap_future(engine.submit_record(rows))``), which is how
        the HTTP service acknowledges a batch only once it is durable.
        """
        from adloop.storage import AppendResult, RowError

        rows, counts = _campaign_counts(events)
        hidden_ids: set[str] = set()
        if tenant is not None:
            owners = self._tenants
            hidden_ids = {
                c for c in counts if isinstance(c, str) and owners.get(c, tenant) != tenant
            }
        hidden: list[int] = []
        index_map: list[int] = []
        if hidden_ids:
            keep = [c not in hidden_ids for c in _campaign_ids(rows)]
            hidden = [i for i, k in enumerate(keep) if not k]
            index_map = [i for i, k in enumerate(keep) if k]
            rows = _select(rows, keep)
        for campaign_id, n in counts.items():
            live = self._live.get(campaign_id) if campaign_id not in hidden_ids else None
            if live is not None:
                live.activity += n
        if index_map or (not hidden and sum(counts.values())):
            stored = self._store.submit_events(rows)
        else:
            stored = Future()
            stored.set_result(AppendResult(accepted=0, duplicates=0, rejected=0, errors=[]))
        if not hidden:
            return stored

        def with_hidden(result: Any) -> Any:
            errors = [
                RowError(row=index_map[e.row], field=e.field, reason=e.reason)
                for e in result.errors
            ]
            errors += [
                RowError(row=i, field="campaign_id", reason="unknown campaign") for i in hidden
            ]
            errors.sort(key=lambda e: e.row)
            return AppendResult(
                accepted=result.accepted,
                duplicates=result.duplicates,
                rejected=result.rejected + len(hidden),
                errors=errors,
            )

        return _then(stored, with_hidden)

    # ------------------------------------------------------------------ pool changes

    def add_variants(
        self,
        campaign_id: str,
        variants: Sequence[Mapping[str, Any]] | None = None,
        *,
        n: int | None = None,
        tenant: str | None = None,
        seed: int | None = None,
    ) -> list[dict[str, Any]]:
        """Add variants (given, or ``n`` new ones from the generators); they serve at once."""
        row = self._campaign_row(campaign_id, tenant)
        brief = _load_brief(row["brief"])
        now = self._clock()
        if variants:
            rows = self._manual_variants(campaign_id, variants, brief, now, "variants")
            existing = {v["text"] for v in self._store.variants(campaign_id)}
            for i, new in enumerate(rows):
                if new["text"] in existing:
                    raise InvalidRequest(f"variants.{i}.text", "the campaign already has this text")
        else:
            if n is None:
                n = 1
            if not isinstance(n, int) or not 1 <= n <= 200:
                raise InvalidRequest("n", f"must be an integer in 1..200, got {n!r}")
            rows = self._generate(campaign_id, brief, n, seed=seed, now=now)
        if rows:
            with self._lock:
                self._store.insert_variants(campaign_id, rows)
                self._rebuild(campaign_id)
        return [_public_variant(r) for r in rows]

    def retire(self, campaign_id: str, variant_id: str, *, tenant: str | None = None) -> None:
        """Retire one variant: it gets no more traffic from the next decision on."""
        self._campaign_row(campaign_id, tenant)
        with self._lock:
            variants = self._store.variants(campaign_id)
            target = next((v for v in variants if v["variant_id"] == variant_id), None)
            if target is None:
                raise VariantNotFound(campaign_id, variant_id)
            if target["status"] == "retired":
                return
            if sum(v["status"] in SERVABLE for v in variants) <= 1:
                raise InvalidRequest(
                    "variant_id", "cannot retire the last active variant; add variants first"
                )
            self._store.set_variant_status(campaign_id, variant_id, "retired")
            self._rebuild(campaign_id)

    def retire_and_refill(self, campaign_id: str, *, seed: int | None = None) -> dict[str, Any]:
        """Retire clear losers (bandits' retire rule) and let the generators refill the pool.

        New candidates are written with the campaign's existing texts (so near-duplicates
        are filtered out) and its current leaders as parents for recombination.
        """
        from adloop.bandits import ArmCounts, ThompsonSampling, retire_candidates

        row = self._campaign_row(campaign_id, None)
        objective = row.get("objective") or "ctr"
        self.refresh(campaign_id)
        with self._lock:
            variants = self._store.variants(campaign_id, statuses=("active",))
            ids = [v["variant_id"] for v in variants]
            stats = _stats_by_variant(self._store.arm_stats(campaign_id))
            retired: list[str] = []
            if len(ids) >= 2:
                counts = _counts(ArmCounts, ids, stats)
                losers = retire_candidates(
                    counts,
                    objective=objective,
                    floor=self.config.retire_floor,
                    min_impressions=self.config.retire_min_impressions,
                    rng=self._refresh_rng,
                )
                # never retire everything: keep at least the best arm
                losers = [int(i) for i in losers][: max(0, len(ids) - 1)]
                for i in losers:
                    self._store.set_variant_status(campaign_id, ids[i], "retired")
                    retired.append(ids[i])
                p_best = ThompsonSampling(objective, n_draws=self.config.n_draws).probability_best(
                    counts, self._refresh_rng
                )
                order = np.argsort(-p_best)
                leaders = [variants[int(i)] for i in order[:3] if ids[int(i)] not in retired]
            else:
                leaders = list(variants)
            target = int((row.get("settings") or {}).get("n_candidates", len(ids)))
            active_after = len(ids) - len(retired)
            n_new = (
                max(len(retired), target - active_after)
                if retired
                else max(0, target - active_after)
            )
            added: list[dict[str, Any]] = []
            notes: list[str] = []
            if n_new > 0:
                brief = _load_brief(row["brief"])
                rows = self._generate(
                    campaign_id,
                    brief,
                    n_new,
                    seed=seed,
                    now=self._clock(),
                    winners=leaders,
                    notes=notes,
                )
                if rows:
                    self._store.insert_variants(campaign_id, rows)
                added = [_public_variant(r) for r in rows]
            self._rebuild(campaign_id)
        return {
            "campaign_id": campaign_id,
            "retired": retired,
            "added": added,
            "notes": notes,
        }

    def declare_winner(
        self, campaign_id: str, *, tenant: str | None = None
    ) -> dict[str, Any] | None:
        """Declare a winner when the bandit's stopping rule allows it; else return None.

        A declared winner then gets all traffic and the campaign is marked completed.
        """
        from adloop.bandits import ArmCounts, decide_winner

        row = self._campaign_row(campaign_id, tenant)
        if row.get("winner_variant_id"):
            return {"variant_id": row["winner_variant_id"], "reason": "already declared"}
        self.refresh(campaign_id)
        with self._lock:
            variants = self._store.variants(campaign_id, statuses=("active",))
            ids = [v["variant_id"] for v in variants]
            if len(ids) < 2:
                return None
            counts = _counts(ArmCounts, ids, _stats_by_variant(self._store.arm_stats(campaign_id)))
            decision = decide_winner(
                counts,
                objective=row.get("objective") or "ctr",
                threshold=self.config.winner_threshold,
                value_remaining=self.config.value_remaining,
                n_draws=self.config.n_draws,
                rng=self._refresh_rng,
            )
            if decision.winner is None:
                return None
            winner_id = ids[int(decision.winner)]
            self._store.set_variant_status(campaign_id, winner_id, "winner")
            self._store.set_campaign_status(campaign_id, "completed", winner_variant_id=winner_id)
            self._rebuild(campaign_id)
        return {
            "variant_id": winner_id,
            "probability_best": float(decision.probability_best[int(decision.winner)]),
            "value_remaining": float(decision.value_remaining),
            "reason": decision.reason,
        }

    # ------------------------------------------------------------------ refresh

    def refresh(self, campaign_id: str | None = None) -> None:
        """Re-read arm statistics and rebuild allocation snapshots (one campaign or all)."""
        targets = [campaign_id] if campaign_id is not None else list(self._tenants)
        if campaign_id is not None and campaign_id not in self._tenants:
            raise CampaignNotFound(campaign_id)
        self._flush_decisions()
        self._store.flush()
        with self._lock:
            for cid in targets:
                self._rebuild(cid, flushed=True)

    def flush(self) -> None:
        """Hand queued decisions to the store and wait until everything is committed."""
        self._flush_decisions()
        self._store.flush()

    def _maybe_refresh(self) -> None:
        now = self._clock()
        interval = timedelta(seconds=self.config.refresh_interval)
        due = [
            cid
            for cid, live in list(self._live.items())
            if live.activity >= self.config.refresh_events
            or (live.activity > 0 and now - live.built_at >= interval)
        ]
        if due:
            self._flush_decisions()
            self._store.flush()
            with self._lock:
                for cid in due:
                    self._rebuild(cid, flushed=True)

    def _maintain(self) -> None:
        last_check = 0.0
        while not self._stop.wait(self.config.flush_interval):
            try:
                self._flush_decisions()
                now = time.monotonic()
                if now - last_check >= min(0.5, self.config.refresh_interval):
                    last_check = now
                    self._maybe_refresh()
            except Exception:  # keep serving on a transient store error; next tick retries
                import logging

                logging.getLogger("adloop.engine").exception("background refresh failed")

    def _rebuild(self, campaign_id: str, *, flushed: bool = False) -> None:
        """Build the campaign's snapshot from the store (callers hold the lock or are init)."""
        from adloop.bandits import UCB1, ArmCounts, EpsilonGreedy, ThompsonSampling, Uniform

        row = self._store.campaign(campaign_id)
        if row is None:
            raise CampaignNotFound(campaign_id)
        settings = row.get("settings") or {}
        log_impressions = not settings.get("impressions_reported_separately", False)
        built_at = self._clock()
        variants = self._store.variants(campaign_id, statuses=SERVABLE)
        winner = row.get("winner_variant_id")
        if winner:
            variants = [v for v in variants if v["variant_id"] == winner] or variants
        ids = [v["variant_id"] for v in variants]
        texts = [v["text"] for v in variants]
        by_segment: dict[str, _Table] = {}
        if len(ids) <= 1:
            overall = _Table(ids, texts, np.ones(len(ids)))
        else:
            objective = row.get("objective") or "ctr"
            floor = min(self.config.floor, 0.99 / len(ids))
            if self.config.policy == "ts":
                policy = ThompsonSampling(
                    objective, floor=floor, top_two=self.config.top_two, n_draws=self.config.n_draws
                )
            else:
                baseline = {"uniform": Uniform, "egreedy": EpsilonGreedy, "ucb1": UCB1}
                policy = baseline[self.config.policy](objective, floor=floor)
            frame = self._store.arm_stats(campaign_id, half_life=self.config.half_life)
            counts = _counts(ArmCounts, ids, _stats_by_variant(frame))
            overall = _Table(ids, texts, policy.weights(counts, self._refresh_rng))
            # Only Thompson sampling has hierarchical per-segment posteriors; baselines
            # allocate one split for every segment, as they do in their usual form.
            if self.config.segment_allocation and isinstance(policy, ThompsonSampling):
                seg_frame = self._store.arm_stats(
                    campaign_id, half_life=self.config.half_life, by_segment=True
                )
                per_segment = _stats_by_segment(seg_frame)
                if per_segment:
                    seg_counts = {s: _counts(ArmCounts, ids, st) for s, st in per_segment.items()}
                    seg_weights = policy.weights_by_segment(seg_counts, counts, self._refresh_rng)
                    by_segment = {s: _Table(ids, texts, w) for s, w in seg_weights.items()}
        self._tenants[campaign_id] = row["tenant"]
        self._live[campaign_id] = _Live(
            campaign_id, row["tenant"], log_impressions, overall, by_segment, built_at
        )
        self._counters["refreshes"] += 1

    def _flush_decisions(self) -> None:
        pending = self._pending
        if not pending:
            return
        batches: dict[bool, list[tuple]] = {True: [], False: []}
        try:
            while True:
                item = pending.popleft()
                batches[item[6]].append(item)
        except IndexError:
            pass
        import pyarrow as pa

        for log_impressions, items in batches.items():
            if not items:
                continue
            columns = list(zip(*items, strict=True))
            if self._epoch_stamps:
                micros = pa.array([round(t * 1e6) for t in columns[5]], pa.int64())
                stamps = micros.cast(pa.timestamp("us"))
            else:
                stamps = pa.array(columns[5], pa.timestamp("us"))
            # Arrow columns straight away: the cheapest form for the store, and this runs
            # beside the request path, so every millisecond holding the GIL counts.
            frame = pa.table(
                {
                    "decision_id": pa.array(columns[0], pa.string()),
                    "campaign_id": pa.array(columns[1], pa.string()),
                    "variant_id": pa.array(columns[2], pa.string()),
                    "segment": pa.array(columns[3], pa.string()),
                    "probability": pa.array(columns[4], pa.float64()),
                    "ts": stamps,
                }
            )
            self._store.log_decisions(frame, impressions=log_impressions)

    # ------------------------------------------------------------------ internals

    def _campaign_row(self, campaign_id: str, tenant: str | None) -> dict[str, Any]:
        owner = self._tenants.get(campaign_id)
        if owner is None or (tenant is not None and owner != tenant):
            raise CampaignNotFound(campaign_id)
        row = self._store.campaign(campaign_id)
        if row is None:
            raise CampaignNotFound(campaign_id)
        return row

    def _new_id(self, prefix: str, n_hex: int) -> str:
        return f"{prefix}{self._ids.getrandbits(4 * n_hex):0{n_hex}x}"

    def _seed_for(self, seed: int | None, campaign_id: str) -> int:
        if seed is not None:
            return seed
        return int(hashlib.blake2b(campaign_id.encode(), digest_size=4).hexdigest(), 16)

    def _generate(
        self,
        campaign_id: str,
        brief: Any,
        n: int,
        *,
        seed: int | None,
        now: datetime,
        winners: Sequence[Mapping[str, Any]] = (),
        notes: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        existing = [v["text"] for v in self._store.variants(campaign_id)]
        generation_seed = self._seed_for(seed, f"{campaign_id}:{len(existing)}")
        result = self.pool.generate(
            brief,
            n,
            existing_texts=existing,
            winners=list(winners),
            seed=generation_seed,
            time_budget_s=self.config.generation_time_budget,
        )
        if notes is not None:
            notes.extend(result.notes)
            if len(result.candidates) < n:
                notes.append(
                    f"asked for {n} candidates, got {len(result.candidates)}; "
                    f"drops: {dict(result.drop_counts)}"
                )
        return _in_order([self._candidate_row(campaign_id, c, now) for c in result.candidates])

    def _candidate_row(self, campaign_id: str, candidate: Any, now: datetime) -> dict[str, Any]:
        provenance = candidate.to_dict() if hasattr(candidate, "to_dict") else {}
        return {
            "variant_id": self._new_id("v_", 12),
            "campaign_id": campaign_id,
            "headline": candidate.headline,
            "description": candidate.description or "",
            "text": candidate.text,
            "language": candidate.language,
            "generator": candidate.generator,
            "model_version": candidate.model_version,
            "parent_ids": list(candidate.parent_ids or ()),
            "provenance": provenance,
            "status": "active",
            "created_at": now,
        }

    def _manual_variants(
        self,
        campaign_id: str,
        variants: Iterable[Any],
        brief: Any,
        now: datetime,
        where: str,
    ) -> list[dict[str, Any]]:
        rows = []
        seen: set[str] = set()
        if isinstance(variants, str | bytes) or not isinstance(variants, Iterable):
            raise InvalidRequest(where, "must be a list of variants")
        for i, given in enumerate(variants):
            if isinstance(given, str):
                given = {"text": given}
            if not isinstance(given, Mapping):
                raise InvalidRequest(f"{where}.{i}", "must be an object or a string")
            unknown = set(given) - {"text", "headline", "description"}
            if unknown:
                raise InvalidRequest(f"{where}.{i}.{sorted(unknown)[0]}", "unknown field")
            headline = given.get("headline")
            description = given.get("description") or ""
            text = given.get("text")
            for name, value in (
                ("headline", headline),
                ("description", description),
                ("text", text),
            ):
                if value is not None and not isinstance(value, str):
                    raise InvalidRequest(f"{where}.{i}.{name}", "must be a string")
            if not text:
                if not headline:
                    raise InvalidRequest(f"{where}.{i}.text", "give 'text' or 'headline'")
                text = f"{headline} — {description}" if description else headline
            headline = headline or text
            text = text.strip()
            if not text or len(text) > 2000:
                raise InvalidRequest(f"{where}.{i}.text", "must be 1..2000 characters")
            if text in seen:
                raise InvalidRequest(f"{where}.{i}.text", "duplicate text")
            seen.add(text)
            rows.append(
                {
                    "variant_id": self._new_id("v_", 12),
                    "campaign_id": campaign_id,
                    "headline": headline,
                    "description": description,
                    "text": text,
                    "language": getattr(brief, "language", None),
                    "generator": "manual",
                    "model_version": None,
                    "parent_ids": [],
                    "provenance": {"generator": "manual"},
                    "status": "active",
                    "created_at": now,
                }
            )
        if not rows:
            raise InvalidRequest(where, "must list at least one variant")
        return _in_order(rows)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop background work, commit every queued decision, and close an owned store."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._flush_decisions()
        self._store.flush()
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _campaign_counts(events: Any) -> tuple[Any, dict[Any, int]]:
    """The batch in a form the store takes, and how many of its rows name each campaign."""
    if isinstance(events, list):
        return events, dict(Counter(_campaign_ids(events)))
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(events, pa.Table):
        import polars as pl

        events = events.to_arrow() if isinstance(events, pl.DataFrame) else pa.table(events)
    if "campaign_id" not in events.column_names:
        return events, {None: events.num_rows}
    counts = pc.value_counts(events.column("campaign_id"))
    return events, dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _campaign_ids(rows: Any) -> list[Any]:
    """Each row's campaign_id (None where it has none), in row order."""
    if isinstance(rows, list):
        return [e.get("campaign_id") if isinstance(e, Mapping) else None for e in rows]
    if "campaign_id" not in rows.column_names:
        return [None] * rows.num_rows
    return rows.column("campaign_id").to_pylist()


def _then(future: Future, fn: Callable[[Any], Any]) -> Future:
    """A future for ``fn(future.result())`` (or ``future``'s exception)."""
    out: Future = Future()

    def done(inner: Future) -> None:
        try:
            out.set_result(fn(inner.result()))
        except BaseException as error:  # noqa: BLE001 - handed to the waiter, not swallowed
            out.set_exception(error)

    future.add_done_callback(done)
    return out


def _select(rows: Any, keep: list[bool]) -> Any:
    if isinstance(rows, list):
        return [row for row, k in zip(rows, keep, strict=True) if k]
    import pyarrow as pa

    return rows.filter(pa.array(keep, pa.bool_()))


def _in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stamp rows a microsecond apart so the store lists them in the order they were given."""
    for i, row in enumerate(rows):
        row["created_at"] = row["created_at"] + timedelta(microseconds=i)
    return rows


def _load_brief(source: Any) -> Any:
    try:
        from adloop.generators import load_brief
    except ImportError:  # pragma: no cover - older generators without the re-export
        from adloop.generators.brief import load_brief

    return load_brief(source)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _public_variant(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "variant_id": row["variant_id"],
        "text": row["text"],
        "headline": row["headline"],
        "description": row["description"],
        "language": row["language"],
        "generator": row["generator"],
        "model_version": row["model_version"],
        "parent_ids": list(row["parent_ids"]),
        "status": row["status"],
    }


def _stats_by_variant(frame: Any) -> dict[str, dict[str, float]]:
    return {row["variant_id"]: row for row in frame.iter_rows(named=True)}


def _stats_by_segment(frame: Any) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in frame.iter_rows(named=True):
        segment = row.get("segment")
        if segment is None:
            continue
        out.setdefault(segment, {})[row["variant_id"]] = row
    return out


def _counts(arm_counts: Any, ids: Sequence[str], stats: Mapping[str, Mapping[str, float]]) -> Any:
    def column(name: str) -> np.ndarray:
        return np.array([float(stats.get(v, {}).get(name, 0.0) or 0.0) for v in ids])

    return arm_counts(
        list(ids),
        column("impressions"),
        column("clicks"),
        conversions=column("conversions"),
        value=column("value"),
    )
