"""Who is calling: the API key of a request, checked with as little work as possible.

Shared by the routes and the choose fast path, so a flood of wrong keys is refused before
FastAPI's router with exactly the answer the routes give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fastapi.concurrency import run_in_threadpool

from adloop.optimizer.auth import FailedAuthLimiter, KeyRing, Principal
from adloop.optimizer.engine import Engine
from adloop.optimizer.errors import HTTPError
from adloop.optimizer.http_metrics import ServiceMetrics

__all__ = ["ServiceState", "authenticate"]


@dataclass(frozen=True)
class ServiceState:
    """What the routes work with, kept in ``app.state.service``."""

    engine: Engine
    keys: KeyRing
    metrics: ServiceMetrics
    max_body_bytes: int
    failed_auth: FailedAuthLimiter = field(default_factory=FailedAuthLimiter)
    chooser: Any = None
    """What ``choose`` draws from: the engine, or a scaled-out deployment's
    :class:`~adloop.optimizer.serving.SnapshotChooser` (same calls)."""
    scale_out: Any = None
    """The scaled-out deployment's links (:class:`~adloop.optimizer.serving.ScaleOut`), or
    None: events go to the engine's store."""


async def authenticate(state: ServiceState, key: str | None, client: str) -> Principal:
    """Who is calling, from the API key; 401 when it is missing or wrong, 429 when the
    client has failed too often.

    A key known valid in memory costs no I/O, and a key remembered as wrong neither: the
    store is asked at most once a second per key (:class:`KeyRing`). Each failure is counted
    against the client's address; once its budget is spent, the client's requests with a
    key this server has not seen valid are answered 429 with ``Retry-After``, without a
    lookup (a flood of fresh random keys costs no I/O). Keys in use keep working.
    """
    if key:
        found = state.keys.cached(key)
        if found is not None:
            return found
    spent = False
    if not (key and state.keys.recognizes(key)):  # may fail: spend the client's budget first
        spent, wait = state.failed_auth.try_spend(client)
        if wait > 0:
            state.metrics.auth_failures.inc(reason="rate_limited")
            raise HTTPError(
                429,
                "too_many_failures",
                f"too many failed authentications from {client}; retry in {math.ceil(wait)} s",
                "authorization",
                headers={"Retry-After": str(math.ceil(wait))},
            )
    if key and not state.keys.known_wrong(key):
        found = await run_in_threadpool(state.keys.authenticate, key)
        if found is not None:
            if spent:
                state.failed_auth.refund(client)
            return found
    if not spent:
        state.failed_auth.record_failure(client)
    state.metrics.auth_failures.inc(reason="wrong" if key else "missing")
    if not key:
        raise HTTPError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>'",
            "authorization",
        )
    raise HTTPError(401, "unauthorized", "unknown, revoked or expired API key", "authorization")
