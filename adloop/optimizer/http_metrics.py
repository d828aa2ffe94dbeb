"""The HTTP service's Prometheus metrics, and the ASGI middleware that counts every request.

``GET /metrics`` renders :attr:`ServiceMetrics.registry`: requests and latency by route and
status, events by outcome, failed authentications by reason, decisions, snapshot refreshes and
ages, ingest and decision queues, and how many ``choose`` requests the fast path answered.

Who sees what (:func:`scrape_scope`): series labelled with a campaign (or another tenant's
identifier) are shown to an admin key in full, to a tenant key for that tenant's campaigns
only, and to a scrape without a key not at all; the identifier-free series (totals, queues,
latency by route template, the largest snapshot age) are shown to every scrape.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adloop.optimizer.engine import Engine
from adloop.optimizer.metrics import Counter, Histogram, Registry, Visible

__all__ = [
    "FastPathCounts",
    "IngestQueue",
    "RequestMetrics",
    "ServiceMetrics",
    "add_scale_out_metrics",
    "scrape_scope",
    "service_metrics",
]


@dataclass
class IngestQueue:
    """Event batches received and waiting for their commit (read by the queue gauges)."""

    events: int = 0
    requests: int = 0


@dataclass
class FastPathCounts:
    """``choose`` requests the fast path answered, refused for their key, or handed on.

    Plain integers, read by a counter at scrape time: this is counted on the hottest path.
    """

    answered: int = 0
    refused: int = 0
    handed_on: int = 0


@dataclass(frozen=True)
class ServiceMetrics:
    """The registry ``GET /metrics`` renders, and the series the service updates itself."""

    registry: Registry
    requests: Counter = field(repr=False)
    latency: Histogram = field(repr=False)
    events: Counter = field(repr=False)
    auth_failures: Counter = field(repr=False)
    choose_fast_path: FastPathCounts = field(repr=False)
    ingest: IngestQueue = field(repr=False)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency under its route template."""
        self.latency.observe(seconds, route=route)
        self.requests.inc(route=route, status=str(status))


def service_metrics(engine: Engine) -> ServiceMetrics:
    """A fresh registry with the service's metrics; the engine's are read at scrape time."""
    registry = Registry()
    ingest = IngestQueue()
    fast_path = FastPathCounts()
    metrics = ServiceMetrics(
        registry=registry,
        requests=registry.counter(
            "adloop_http_requests_total", "HTTP requests by route and status.", ("route", "status")
        ),
        latency=registry.histogram(
            "adloop_http_request_duration_seconds", "HTTP request latency by route.", ("route",)
        ),
        events=registry.counter("adloop_events_total", "Events received by outcome.", ("outcome",)),
        auth_failures=registry.counter(
            "adloop_auth_failures_total",
            "Requests refused for their API key: 'missing', 'wrong' (unknown, revoked or "
            "expired), or 'rate_limited' (429: too many failures from one client).",
            ("reason",),
        ),
        choose_fast_path=fast_path,
        ingest=ingest,
    )
    registry.gauge(
        "adloop_http_choose_fast_path_total",
        "Choose requests seen by the fast path: 'answered' there, 'refused' there for their "
        "key (401 wrong key, 429 too many failures), or 'handed_on' to the route (no key, "
        "'n', a body it declines, an unknown campaign, ...).",
        lambda: {
            ("answered",): fast_path.answered,
            ("refused",): fast_path.refused,
            ("handed_on",): fast_path.handed_on,
        },
        ("outcome",),
        kind="counter",
    )
    registry.gauge(
        "adloop_decisions_total",
        "Decisions served (in-process and HTTP).",
        lambda: float(engine.stats()["decisions"]),
        kind="counter",
    )
    registry.gauge(
        "adloop_snapshot_refreshes_total",
        "Allocation snapshots rebuilt.",
        lambda: float(engine.stats()["refreshes"]),
        kind="counter",
    )
    registry.gauge(
        "adloop_snapshot_refresh_failing",
        "Consecutive failed snapshot builds of each campaign whose last build failed (it "
        "serves its last snapshot or a uniform split meanwhile).",
        lambda: {(cid,): float(n) for cid, n in engine.stats()["refresh_failing"].items()},
        ("campaign_id",),
    )
    registry.gauge(
        "adloop_snapshot_refresh_failing_campaigns",
        "How many campaigns' last snapshot build failed.",
        lambda: float(len(engine.stats()["refresh_failing"])),
    )
    registry.gauge(
        "adloop_snapshot_age_seconds",
        "Age of each campaign's allocation snapshot (admin keys: all campaigns; tenant "
        "keys: their own; no key: none).",
        lambda: {(cid,): age for cid, age in engine.stats()["snapshot_age_seconds"].items()},
        ("campaign_id",),
    )
    registry.gauge(
        "adloop_snapshot_age_max_seconds",
        "Age of the oldest allocation snapshot, over all campaigns.",
        lambda: max(engine.stats()["snapshot_age_seconds"].values(), default=0.0),
    )
    registry.gauge(
        "adloop_ingest_queue_events",
        "Events received and not yet committed.",
        lambda: float(ingest.events),
    )
    registry.gauge(
        "adloop_ingest_queue_requests",
        "Event requests waiting for their commit.",
        lambda: float(ingest.requests),
    )
    registry.gauge(
        "adloop_decisions_queued",
        "Decisions waiting to be written to the store.",
        lambda: float(engine.stats()["pending_decisions"]),
    )
    return metrics


def add_scale_out_metrics(metrics: ServiceMetrics, scale_out: Any, chooser: Any) -> None:
    """The series of a scaled-out serving process: its snapshots' age and version, whether
    the snapshot store answers, and the producer's queue (see ``optimizer.serving.ScaleOut``).
    """
    registry = metrics.registry
    registry.gauge(
        "adloop_scale_snapshot_age_seconds",
        "Age of each campaign's snapshot served here, since the refresher built it (it grows "
        "while the refresher or the store is down: a stale snapshot shows here).",
        lambda: {(c,): age for c, age in scale_out.metrics()["snapshot_age_seconds"].items()},
        ("campaign_id",),
    )
    registry.gauge(
        "adloop_scale_snapshot_age_max_seconds",
        "Age of the oldest snapshot served here, over all campaigns.",
        lambda: max(scale_out.metrics()["snapshot_age_seconds"].values(), default=0.0),
    )
    registry.gauge(
        "adloop_scale_snapshot_version",
        "Version of each campaign's snapshot served here (every process should agree).",
        lambda: {(c,): float(v) for c, v in scale_out.metrics()["snapshot_version"].items()},
        ("campaign_id",),
    )
    registry.gauge(
        "adloop_scale_snapshot_store_reachable",
        "1 while the snapshot store (PostgreSQL) answers, 0 while this process serves its "
        "last snapshots without it.",
        lambda: float(scale_out.metrics()["store_reachable"]),
    )
    registry.gauge(
        "adloop_scale_events_queued",
        "Events and logged decisions queued for the broker or sent and not yet acknowledged.",
        lambda: float(scale_out.metrics()["events_queued"]),
    )
    registry.gauge(
        "adloop_scale_impressions_lost_total",
        "Logged decisions (impression events) the broker refused after every retry.",
        lambda: float(scale_out.metrics()["impressions_lost"]),
        kind="counter",
    )
    registry.gauge(
        "adloop_scale_decisions_total",
        "Decisions served here from snapshots.",
        lambda: float(chooser.n_decisions),
        kind="counter",
    )


def scrape_scope(admin: bool, campaign_ids: Collection[str] | None) -> Visible | None:
    """What one scrape may see: ``visible(label, value)`` for :meth:`Registry.render`.

    ``admin``: everything (None). Otherwise only series about ``campaign_ids`` (a tenant's
    own campaigns; None for a scrape without a key, which sees no identifier at all).
    """
    if admin:
        return None
    own = frozenset(campaign_ids or ())
    return lambda label, value: label == "campaign_id" and value in own


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by route template and status.

    The route is the template the router matched (``scope["route"]``), so one campaign's
    requests do not make a series of their own; requests no route matched are "unmatched".
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the application fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, status, time.perf_counter() - start)
