"""The HTTP variant-chooser service (FastAPI): campaigns, choices, events, health, metrics.

``create_app(engine)`` builds the application; ``adloop serve`` runs it under uvicorn.
Interactive API documentation is served at ``/docs``, the campaign dashboard at ``/ui``
(:mod:`~adloop.optimizer.dashboard`).

Limits (documented here and in the README):

* request bodies: at most :data:`MAX_BODY_BYTES` (4 MiB) -> ``413``;
* events per ``POST /v1/events``: at most :data:`MAX_EVENTS_PER_BATCH` (10,000) -> ``422``;
* decisions per ``choose`` call: at most 1,000 (``"n"``).

Scaled out (``create_app(engine, scale_out=...)``, ``adloop serve --events-to kafka://...
--snapshots postgresql://...``): ``choose`` draws from the shared snapshots and
``POST /v1/events`` answers ``202 {"published", "rejected", "errors", "counts":
"asynchronous"}`` once the broker acknowledged the batch, or ``503 broker_unavailable`` with
``Retry-After`` (nothing acknowledged; resend). See the README.

Durability: ``POST /v1/events`` answers 2xx only after the COMMIT, so an acknowledged event
survives SIGKILL. Decisions (and the impressions ``choose`` logs) are queued in memory and
written within ``EngineConfig.flush_interval`` (0.2 s) plus one group commit; SIGTERM drains
them, SIGKILL can lose that last fraction of a second of decisions (never acknowledged events).

Storage faults: a write on a full disk answers ``507`` (``storage_full``), any other storage
failure ``503`` (``storage_unavailable``), naming the cause; ``/healthz`` answers 503 while
writes fail. Decisions that could not be written are kept in memory and retried every second
(up to 2,000,000 rows), a database DuckDB invalidated is reopened, and the service recovers by
itself once space is freed. If kept decisions still cannot be written at shutdown, the
shutdown fails loudly and ``adloop serve`` exits non-zero.

Every error is JSON ``{"error": CODE, "message": TEXT, "field": "dotted.path" | null}``.
A request rejected as a whole changes nothing; ``POST /v1/events`` answers only after the
batch is committed, and reports per-row rejections (unknown campaign/variant, duplicates)
while keeping the good rows, exactly like ``adloop events import``.

The parts, one module each:

* :mod:`~adloop.optimizer.http_models` -- request bodies (the contract) and limits;
* :mod:`~adloop.optimizer.http_codec` -- reading and decoding bodies (msgspec fast path,
  pydantic for the rest), JSON answers;
* :mod:`~adloop.optimizer.http_errors` -- errors as JSON answers;
* :mod:`~adloop.optimizer.http_routes` -- the routes;
* :mod:`~adloop.optimizer.http_fast_choose` -- ASGI middleware answering a plainly valid
  single ``choose`` ahead of the router;
* :mod:`~adloop.optimizer.http_metrics` -- Prometheus metrics and the request-counting
  middleware.

Example::

    from adloop.optimizer import Engine
    from adloop.optimizer.service import create_app
    app = create_app(Engine("adloop.duckdb"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from adloop.optimizer.auth import KeyRing
from adloop.optimizer.dashboard import install_dashboard
from adloop.optimizer.engine import Engine
from adloop.optimizer.http_auth import ServiceState
from adloop.optimizer.http_errors import install_error_handlers
from adloop.optimizer.http_fast_choose import ChooseFastPath
from adloop.optimizer.http_limits import BODY_TIMEOUT_SECONDS, BodyReadTimeout
from adloop.optimizer.http_metrics import RequestMetrics, add_scale_out_metrics, service_metrics
from adloop.optimizer.http_models import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH
from adloop.optimizer.http_openapi import install_docs
from adloop.optimizer.http_routes import (
    CHOOSE_PATH,
    add_routes,
    install_openapi,
)
from adloop.optimizer.serving import ScaleOut, SnapshotChooser

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS_PER_BATCH", "create_app"]

_log = logging.getLogger("adloop.service")


def _lifespan(
    engine: Engine,
    *,
    close_engine: bool,
    on_startup: Callable[[], None] | None,
    on_shutdown: Callable[[], None] | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Run the hooks around the application's life, then commit queued decisions."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shutdown_error = None
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            # Requests in flight have finished (uvicorn drains them before the lifespan
            # ends); now commit queued decisions so nothing acknowledged is lost. Every step
            # runs even if one fails, and the first failure is kept in
            # ``app.state.shutdown_error`` so ``adloop serve`` can exit non-zero.
            steps = [on_shutdown, engine.flush, engine.close if close_engine else None]
            errors: list[Exception] = []
            for step in steps:
                if step is None:
                    continue
                try:
                    await run_in_threadpool(step)
                except Exception as exc:  # noqa: BLE001 - reported below, after every step
                    _log.error("shutdown step %s failed: %s", step.__name__, exc)
                    errors.append(exc)
            if errors:
                app.state.shutdown_error = errors[0]
                raise errors[0]

    return lifespan


class ServiceApp(FastAPI):
    """The service's FastAPI application, with a front door ahead of Starlette's stack.

    Starlette runs every request through its error, telemetry and body-limit layers before
    any middleware of ours; for the two things that must cost least -- a plainly valid
    ``choose`` and the refusal of a wrong key -- those layers cost as much as the work. So the
    application, a plain :class:`FastAPI` to everyone else, first hands each request to
    ``front`` (body read timeout, then the choose fast path), which answers what it can and
    passes everything else to the full stack, exactly as FastAPI would run it.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None or scope["type"] != "http":
            await self.stack(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request through FastAPI's own middleware stack, routes and handlers."""
        await super().__call__(scope, receive, send)


def create_app(
    engine: Engine,
    *,
    keyring: KeyRing | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    close_engine: bool = False,
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
    scale_out: ScaleOut | None = None,
) -> FastAPI:
    """Build the FastAPI application around ``engine``.

    Parameters
    ----------
    engine:
        The engine that owns campaigns and the store.
    keyring:
        Resolves API keys (default: keys stored in the engine's store).
    max_body_bytes:
        Largest accepted request body; larger ones get 413.
    body_timeout:
        Seconds a request may take to deliver its body; a slower one gets 408 and is closed.
    close_engine:
        Close the engine (committing queued decisions) when the application shuts down.
    on_startup, on_shutdown:
        Extra hooks (e.g. a scheduler) run in the application's lifespan.
    scale_out:
        A scaled-out deployment's links (``adloop.scale.serving.ScaleOut``): ``choose``
        draws from its snapshots and ``POST /v1/events`` publishes to its broker (202 once
        acknowledged); campaigns, variants and keys stay in ``engine``'s store, and their
        changes are registered in the shared one. None: everything goes through ``engine``.

    Example::

        app = create_app(Engine("adloop.duckdb"), close_engine=True)
    """
    keys = keyring or KeyRing(engine.store)
    metrics = service_metrics(engine)
    app = ServiceApp(
        title="adloop",
        version="0.1.0",
        summary="Variant chooser: choose ad copy per impression and learn from events.",
        description=(
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
            f"Bodies over {max_body_bytes} bytes get 413; event batches are limited to "
            f"{MAX_EVENTS_PER_BATCH} events. Errors: "
            '`{"error": code, "message": text, "field": path}`.'
        ),
        docs_url=None,  # install_docs serves the docs pages with local assets
        redoc_url=None,
        lifespan=_lifespan(
            engine, close_engine=close_engine, on_startup=on_startup, on_shutdown=on_shutdown
        ),
    )
    chooser: Any = engine
    if scale_out is not None:
        chooser = SnapshotChooser(scale_out, max_choose_n=engine.config.max_choose_n)
        add_scale_out_metrics(metrics, scale_out, chooser)
    app.state.service = ServiceState(
        engine, keys, metrics, max_body_bytes, chooser=chooser, scale_out=scale_out
    )
    app.state.engine = engine
    app.state.keyring = keys
    app.state.registry = metrics.registry

    install_error_handlers(app)
    add_routes(app)
    install_openapi(app)
    install_docs(app)
    install_dashboard(app)  # /ui: after the API's routes, so they are matched first

    app.add_middleware(RequestMetrics, metrics=metrics)
    # Ahead of the stack: the body timeout covers every body read, the fast path's included;
    # the fast path counts and times what it answers itself.
    fast_path = ChooseFastPath(app.stack, state=app.state.service, route_path=CHOOSE_PATH)
    app.front = BodyReadTimeout(fast_path, seconds=body_timeout)
    return app
