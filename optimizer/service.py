"""The HTTP variant-chooser service (FastAPI): campaigns, choices, events, health, metrics.

``create_app(engine)`` builds the application; ``adloop serve`` runs it under uvicorn.
Interactive API documentation is served at ``/docs``.

Limits (documented here and in the README):

* request bodies: at most :data:`MAX_BODY_BYTES` (4 MiB) -> ``413``;
* events per ``POST /v1/events``: at most :data:`MAX_EVENTS_PER_BATCH` (10,000) -> ``422``;
* decisions per ``choose`` call: at most 1,000 (``"n"``).

Durability: ``POST /v1/events`` answers 2xx only after the COMMIT, so an acknowledged event
survives SIGKILL. Decisions (and the impressions ``choose`` logs) are queued in memory and
written within ``EngineConfig.flush_interval`` (0.2 s) plus one group commit; SIGTERM drains
them, SIGKILL can lose that last fraction of a second of decisions (never acknowledged events).

Every error is JSON ``{"error": CODE, "message": TEXT, "field": "dotted.path" | null}``.
A request rejected as a whole changes nothing; ``POST /v1/events`` answers only after the
batch is committed, and reports per-row rejections (unknown campaign/variant, duplicates)
while keeping the good rows, exactly like ``adloop events import``.

Example::

    from adloop.optimizer import Engine
    from adloop.optimizer.service import create_app
    app = create_app(Engine("adloop.duckdb"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adloop.optimizer.auth import KeyRing, Principal, validate_tenant
from adloop.optimizer.engine import Engine
from adloop.optimizer.errors import (
    AuthError,
    CampaignNotFound,
    InvalidRequest,
    NoActiveVariants,
    OptimizerError,
    VariantNotFound,
)
from adloop.optimizer.metrics import Registry

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS_PER_BATCH", "create_app"]

MAX_BODY_BYTES = 4 << 20
MAX_EVENTS_PER_BATCH = 10_000
MAX_CHOOSE_N = 1000

_Id = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    """Bodies reject unknown fields, NaN/Infinity and type coercion."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class VariantIn(_Strict):
    """A variant given by hand: ``text``, or ``headline`` (+ ``description``)."""

    text: str | None = Field(None, min_length=1, max_length=2000)
    headline: str | None = Field(None, min_length=1, max_length=500)
    description: str | None = Field(None, max_length=2000)


class CreateCampaignBody(_Strict):
    """``POST /v1/campaigns``."""

    brief: dict[str, Any] = Field(description="The brief (see generators.Brief).")
    n_candidates: int = Field(8, ge=1, le=200, description="Variants to generate.")
    objective: Literal["ctr", "cvr", "value"] = "ctr"
    variants: list[VariantIn] | None = Field(
        None, max_length=200, description="Variants to use instead of generating."
    )
    impressions_reported_separately: bool = Field(
        False, description="True when the ad server posts impression events itself."
    )
    name: str | None = Field(None, max_length=200)


class AddVariantsBody(_Strict):
    """``POST /v1/campaigns/{id}/variants``: give ``variants``, or ask for ``n`` generated."""

    variants: list[VariantIn] | None = Field(None, min_length=1, max_length=200)
    n: int | None = Field(None, ge=1, le=200)


class ChooseBody(_Strict):
    """``POST /v1/campaigns/{id}/choose``."""

    segment: str | None = Field(None, min_length=1, max_length=128)
    request_id: str | None = Field(None, min_length=1, max_length=128)
    n: int | None = Field(None, ge=1, le=MAX_CHOOSE_N)


class EventIn(_Strict):
    """One event, as in the import format."""

    event_id: _Id
    type: Literal["impression", "click", "conversion"]
    campaign_id: _Id
    variant_id: _Id
    ts: datetime | None = Field(None, description="UTC; defaults to the time of receipt.")
    decision_id: _Id | None = None
    segment: str | None = Field(None, min_length=1, max_length=128)
    value: float | None = Field(None, ge=0)

    @field_validator("ts")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value


class EventsBody(_Strict):
    """``POST /v1/events``."""

    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class KeyBody(_Strict):
    """``POST /v1/keys`` (admin keys only)."""

    tenant: str = Field(min_length=1, max_length=64)
    admin: bool = False


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details


def _error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    details: list | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    payload: dict[str, Any] = {"error": code, "message": message, "field": field}
    if details:
        payload["details"] = details
    return JSONResponse(payload, status_code=status, headers=headers)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, default=str, allow_nan=False).encode()


def _json(payload: Any, status: int = 200) -> Response:
    # Serialising ourselves skips FastAPI's generic encoder on the hot paths.
    return Response(_dumps(payload), status_code=status, media_type="application/json")


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) if loc else "body"


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise _HTTPError(
                413, "body_too_large", f"request body over the {limit}-byte limit", "body"
            )
        return await request.body()  # the server enforces the declared length
    # No declared length (chunked): count while reading, never buffer more than the limit.
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise _HTTPError(
                413, "body_too_large", f"request body over the {limit}-byte limit", "body"
            )
    return bytes(chunks)


async def _parse(
    request: Request,
    model: type[BaseModel],
    limit: int,
    *,
    empty_ok: bool = False,
    raw: bytes | None = None,
) -> Any:
    if raw is None:
        raw = await _read_body(request, limit)
    if not raw.strip():
        if empty_ok:
            raw = b"{}"
        else:
            raise _HTTPError(
                400, "invalid_json", "the request body is empty; send a JSON object", "body"
            )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise _HTTPError(
                400, "invalid_json", f"malformed JSON: {first['msg']}", "body"
            ) from None
        details = [
            {"field": _loc(e["loc"]), "type": e["type"], "message": e["msg"]} for e in errors[:20]
        ]
        field = _loc(first["loc"])
        status, code = 422, "invalid_request"
        if first["type"] == "too_long" and field == "events":
            message = f"batch over the {MAX_EVENTS_PER_BATCH}-event limit; split it"
        else:
            message = f"{field}: {first['msg']}"
        raise _HTTPError(status, code, message, field, details) from None


def _events_table(events: list[EventIn], now: datetime) -> Any:
    """Validated events as an Arrow table: the store's fastest input (no per-row dicts)."""
    import pyarrow as pa

    def column(name: str) -> list[Any]:
        return [getattr(event, name) for event in events]

    return pa.table(
        {
            "event_id": pa.array(column("event_id"), pa.string()),
            "type": pa.array(column("type"), pa.string()),
            "campaign_id": pa.array(column("campaign_id"), pa.string()),
            "variant_id": pa.array(column("variant_id"), pa.string()),
            "decision_id": pa.array(column("decision_id"), pa.string()),
            "segment": pa.array(column("segment"), pa.string()),
            "ts": pa.array([e.ts or now for e in events], pa.timestamp("us")),
            "value": pa.array(column("value"), pa.float64()),
        }
    )


_MsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _PlainEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """:class:`EventIn` for the fast path: the same fields and limits, checked in C.

    Untracked by the garbage collector (``gc=False``): it holds only strings and numbers, so
    it can never be part of a cycle, and thousands per second would otherwise trigger
    collections.
    """

    event_id: _MsgId
    type: Literal["impression", "click", "conversion"]
    campaign_id: _MsgId
    variant_id: _MsgId
    ts: str | None = None  # parsed by ``_timestamps``
    decision_id: _MsgId | None = None
    segment: _MsgId | None = None
    value: Annotated[float, msgspec.Meta(ge=0)] | None = None


class _PlainBody(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[
        list[_PlainEvent], msgspec.Meta(min_length=1, max_length=MAX_EVENTS_PER_BATCH)
    ]


_plain_decoder = msgspec.json.Decoder(_PlainBody)
_NAIVE_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?")
_ZONED_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_PLAIN_FIELDS = _PlainEvent.__struct_fields__


class _PlainChoose(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """:class:`ChooseBody` for the fast path: the same fields and limits, checked in C."""

    segment: _MsgId | None = None
    request_id: _MsgId | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHOOSE_N)] | None = None


_plain_choose_decoder = msgspec.json.Decoder(_PlainChoose)
#: For plain strings and finite numbers only (the choose response): msgspec writes them
#: as ``json.dumps`` would, minus the spaces, ten times faster.
_encode = msgspec.json.Encoder().encode


_CHOOSE_ROUTE = "/v1/campaigns/{campaign_id}/choose"


def _replay(first: dict, receive: Callable) -> Callable:
    """An ASGI ``receive`` that gives ``first`` again, then carries on with ``receive``."""
    pending = [first]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()

    return replay


def _plain_choose(raw: bytes) -> _PlainChoose | None:
    """A plainly valid ``choose`` body (empty means ``{}``), or None: the model decides."""
    if not raw.strip():
        return _PlainChoose()
    try:
        return _plain_choose_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _fast_events_table(raw: bytes, now: datetime) -> Any | None:
    """``POST /v1/events`` bodies that are plainly valid, straight to Arrow; else None.

    The body is decoded and type-checked in one pass by msgspec against :class:`_PlainEvent`
    (the fields and limits of :class:`EventIn`), then goes to Arrow column by column, with no
    model object per event: about 0.5 us per event here, against 2.4 for the pydantic models
    plus conversion. This path accepts only bodies that :class:`EventsBody` accepts too,
    giving the same values; anything else (a wrong type, a bad or unusual timestamp, an
    infinite value, an unknown field) returns None, and the caller validates with the
    models, whose first error names the field.
    """
    import pyarrow as pa

    try:
        events = _plain_decoder.decode(raw).events
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    rows = map(msgspec.structs.astuple, events)
    columns = dict(zip(_PLAIN_FIELDS, zip(*rows, strict=True), strict=True))
    value = columns["value"]
    if any(x is not None for x in value) and not max(x or 0.0 for x in value) < math.inf:
        return None
    try:
        ts = _timestamps(columns["ts"], now)
        if ts is None:
            return None
        return pa.table(
            {
                "event_id": pa.array(columns["event_id"], pa.string()),
                "type": pa.array(columns["type"], pa.string()),
                "campaign_id": pa.array(columns["campaign_id"], pa.string()),
                "variant_id": pa.array(columns["variant_id"], pa.string()),
                "decision_id": pa.array(columns["decision_id"], pa.string()),
                "segment": pa.array(columns["segment"], pa.string()),
                "ts": ts,
                "value": pa.array(value, pa.float64()),
            }
        )
    except (pa.ArrowException, OverflowError, ValueError):
        return None


def _timestamps(column: list[str | None], now: datetime) -> Any | None:
    """ISO 8601 strings (naive = UTC, or with ``Z``/an offset) as naive UTC; None if any is not.

    Missing ones become ``now``. Each distinct string is checked once (a batch often repeats
    a timestamp); zoned ones are converted to naive UTC text, then one Arrow cast parses all.
    """
    import pyarrow as pa

    texts: dict[str | None, str] = {}
    for text in set(column):
        if text is None:
            texts[None] = now.isoformat()
        elif _NAIVE_TS.fullmatch(text):
            texts[text] = text
        elif _ZONED_TS.fullmatch(text):
            stamp = datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)
            texts[text] = stamp.isoformat()
        else:
            return None
    if any(key != text for key, text in texts.items()):
        column = [texts[text] for text in column]
    return pa.array(column, pa.string()).cast(pa.timestamp("us"))


def _api_key(request: Request) -> str | None:
    return _key_from(request.headers.get("authorization"), request.headers.get("x-api-key"))


def _key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key: ``Authorization: Bearer <key>`` first, else ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key


def create_app(
    engine: Engine,
    *,
    keyring: KeyRing | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    bare_endpoint: bool = False,
    close_engine: bool = False,
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
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
    bare_endpoint:
        Also mount ``GET|POST /bench/bare``, an ``async def`` returning a constant, used by the
        service benchmark as the ceiling of the stack.
    close_engine:
        Close the engine (committing queued decisions) when the application shuts down.
    on_startup, on_shutdown:
        Extra hooks (e.g. a scheduler) run in the application's lifespan.
    """
    keys = keyring or KeyRing(engine.store)
    # An engine that hands back a future for a recorded batch (resolved after its COMMIT) is
    # awaited directly; otherwise ``record`` waits for the commit on a threadpool thread.
    registry = Registry()
    requests_total = registry.counter(
        "adloop_http_requests_total", "HTTP requests by route and status.", ("route", "status")
    )
    latency = registry.histogram(
        "adloop_http_request_duration_seconds", "HTTP request latency by route.", ("route",)
    )
    events_total = registry.counter(
        "adloop_events_total", "Events received by outcome.", ("outcome",)
    )
    ingest = {"queued_events": 0, "queued_requests": 0}
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
        "adloop_snapshot_age_seconds",
        "Age of each campaign's allocation snapshot.",
        lambda: {(cid,): age for cid, age in engine.stats()["snapshot_age_seconds"].items()},
        ("campaign_id",),
    )
    registry.gauge(
        "adloop_ingest_queue_events",
        "Events received and not yet committed.",
        lambda: float(ingest["queued_events"]),
    )
    registry.gauge(
        "adloop_ingest_queue_requests",
        "Event requests waiting for their commit.",
        lambda: float(ingest["queued_requests"]),
    )
    registry.gauge(
        "adloop_decisions_queued",
        "Decisions waiting to be written to the store.",
        lambda: float(engine.stats()["pending_decisions"]),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                on_shutdown()
            # Requests in flight have finished (uvicorn drains them before the lifespan
            # ends); now commit queued decisions so nothing acknowledged is lost.
            await run_in_threadpool(engine.flush)
            if close_engine:
                await run_in_threadpool(engine.close)

    app = FastAPI(
        title="adloop",
        version="0.1.0",
        summary="Variant chooser: choose ad copy per impression and learn from events.",
        description=(
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
            f"Bodies over {max_body_bytes} bytes get 413; event batches are limited to "
            f"{MAX_EVENTS_PER_BATCH} events. Errors: "
            '`{"error": code, "message": text, "field": path}`.'
        ),
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.keyring = keys
    app.state.registry = registry

    # -- middleware: count and time every request (pure ASGI, cheap) -----------------
    inner_app = app.build_middleware_stack

    def build_with_metrics():
        inner = inner_app()

        async def metrics_app(scope, receive, send):
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            start = time.perf_counter()
            if scope["method"] == "POST" and scope["path"].endswith("/choose"):
                receive = await plain_choose(scope, receive, send)
                if receive is None:  # answered
                    latency.observe(time.perf_counter() - start, route=_CHOOSE_ROUTE)
                    requests_total.inc(route=_CHOOSE_ROUTE, status="200")
                    return
            status_holder = [500]

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    status_holder[0] = message["status"]
                await send(message)

            try:
                await inner(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                name = getattr(route, "path", "unmatched")
                latency.observe(time.perf_counter() - start, route=name)
                requests_total.inc(route=name, status=str(status_holder[0]))

        return metrics_app

    app.build_middleware_stack = build_with_metrics  # type: ignore[method-assign]

    async def plain_choose(scope, receive, send):
        """Answer a plainly valid single ``choose`` without the framework; else hand it on.

        Routing, dependency solving and request objects cost about as much CPU as everything
        else in a ``choose`` together, so the common case (a known key, a small valid body, a
        live campaign) is answered here, with exactly the route's result. Anything else (no or
        unknown key, ``n``, a body the fast decoder declines, an unknown campaign) returns a
        ``receive`` that replays what was read, and the route handles the request in full,
        errors included. Returns None once answered.
        """
        parts = scope["path"].split("/")
        if len(parts) != 5 or parts[:3] != ["", "v1", "campaigns"] or not parts[3]:
            return receive
        authorization = x_api_key = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                x_api_key = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        key = _key_from(authorization, x_api_key)
        who = keys.cached(key) if key else None
        if who is None or length is None or not length.isdigit() or int(length) > 4096:
            return receive
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay(message, receive)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        plain = _plain_choose(body)
        if plain is not None and plain.n is None:
            try:
                choice = engine.choose(
                    parts[3], segment=plain.segment, request_id=plain.request_id, tenant=who.tenant
                )
            except OptimizerError:  # the route raises it again and answers with the error
                pass
            else:
                payload = _encode(choice.to_dict())
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return None
        return _replay({"type": "http.request", "body": body, "more_body": False}, receive)

    # -- errors ------------------------------------------------------------------------
    @app.exception_handler(_HTTPError)
    async def _on_http_error(request: Request, exc: _HTTPError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error_response(exc.status, exc.code, exc.message, exc.field, exc.details, headers)

    @app.exception_handler(CampaignNotFound)
    async def _on_campaign(request: Request, exc: CampaignNotFound) -> JSONResponse:
        return _error_response(404, "not_found", str(exc), "campaign_id")

    @app.exception_handler(VariantNotFound)
    async def _on_variant(request: Request, exc: VariantNotFound) -> JSONResponse:
        return _error_response(404, "not_found", str(exc), "variant_id")

    @app.exception_handler(NoActiveVariants)
    async def _on_no_variants(request: Request, exc: NoActiveVariants) -> JSONResponse:
        return _error_response(409, "no_active_variants", str(exc), "campaign_id")

    @app.exception_handler(InvalidRequest)
    async def _on_invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error_response(422, "invalid_request", str(exc), exc.field)

    @app.exception_handler(AuthError)
    async def _on_auth(request: Request, exc: AuthError) -> JSONResponse:
        return _error_response(
            exc.status,
            "unauthorized" if exc.status == 401 else "forbidden",
            str(exc),
            "authorization",
            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
        )

    @app.exception_handler(OptimizerError)
    async def _on_optimizer(request: Request, exc: OptimizerError) -> JSONResponse:
        return _error_response(400, "bad_request", str(exc))

    try:
        from adloop.generators import GeneratorError

        @app.exception_handler(GeneratorError)
        async def _on_generator(request: Request, exc: Exception) -> JSONResponse:
            field = getattr(exc, "field", None)
            if field is None:
                return _error_response(422, "generator_error", str(exc), "brief")
            path = field if field.startswith("brief") else f"brief.{field}"
            return _error_response(422, "invalid_brief", str(exc), path)
    except ImportError:  # generators not installed: campaign creation reports it itself
        pass

    # -- internals ---------------------------------------------------------------------
    async def principal(request: Request) -> Principal:
        key = _api_key(request)
        if not key:
            raise _HTTPError(
                401,
                "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>'",
                "authorization",
            )
        found = keys.cached(key)
        if found is None:
            found = await run_in_threadpool(keys.authenticate, key)
        if found is None:
            raise _HTTPError(401, "unauthorized", "unknown API key", "authorization")
        return found

    security = {"security": [{"ApiKey": []}]}
    campaign_param = {
        "name": "campaign_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Campaign Id"},
    }

    def body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
        return {
            **security,
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": model.model_json_schema()}},
            },
        }

    # -- routes ------------------------------------------------------------------------
    # The serving routes come first: routes are matched in order, and these are hot.
    if bare_endpoint:
        # GET and POST, so a benchmark can send the same request shape as ``choose``
        @app.api_route("/bench/bare", methods=["GET", "POST"], include_in_schema=False)
        async def bare() -> dict[str, str]:
            return {"status": "ok"}

    @app.post(
        _CHOOSE_ROUTE,
        tags=["serving"],
        openapi_extra={**body_doc(ChooseBody, required=False), "parameters": [campaign_param]},
    )
    async def choose(request: Request) -> Response:
        """Choose the variant to show (or ``n`` of them); the decision is logged."""
        # The path parameter is read from the matched route rather than declared, which
        # skips FastAPI's per-request parameter validation on the hottest route.
        campaign_id = request.path_params["campaign_id"]
        who = await principal(request)
        raw = await _read_body(request, max_body_bytes)
        body = _plain_choose(raw)
        if body is None:  # not plainly valid: the model validates it and names the field
            body = await _parse(request, ChooseBody, max_body_bytes, empty_ok=True, raw=raw)
        if body.n is not None:
            if body.request_id is not None:
                raise _HTTPError(
                    422, "invalid_request", "'request_id' applies to single choices", "request_id"
                )
            choices = engine.choose_many(
                campaign_id, body.n, segment=body.segment, tenant=who.tenant
            )
            return _json({"decisions": [c.to_dict() for c in choices]})
        choice = engine.choose(
            campaign_id, segment=body.segment, request_id=body.request_id, tenant=who.tenant
        )
        return Response(_encode(choice.to_dict()), media_type="application/json")

    @app.post("/v1/events", tags=["serving"], openapi_extra=body_doc(EventsBody))
    async def post_events(request: Request) -> Response:
        """Append events; answered after the batch is committed (2xx = durable)."""
        who = await principal(request)
        raw = await _read_body(request, max_body_bytes)
        rows = _fast_events_table(raw, engine.clock())
        if rows is None:  # not plainly valid: the models validate it and name the field
            body = await _parse(request, EventsBody, max_body_bytes, raw=raw)
            rows = _events_table(body.events, engine.clock())
        n_events = rows.num_rows
        ingest["queued_events"] += n_events
        ingest["queued_requests"] += 1
        try:
            # The future resolves on the writer thread after the COMMIT; awaiting it holds
            # no threadpool thread while the batch waits for its group commit.
            result = await asyncio.wrap_future(engine.submit_record(rows, tenant=who.tenant))
        finally:
            ingest["queued_events"] -= n_events
            ingest["queued_requests"] -= 1
        events_total.inc(result.accepted, outcome="accepted")
        events_total.inc(result.duplicates, outcome="duplicate")
        events_total.inc(result.rejected, outcome="rejected")
        return _json(result.to_dict())

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Liveness and readiness: the engine is up and the store answers a read."""
        try:
            await run_in_threadpool(engine.store.api_key, "0" * 64)
        except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
            return _json({"status": "unavailable", "error": str(exc)}, 503)
        stats = engine.stats()
        return _json(
            {
                "status": "ok",
                "campaigns": stats["campaigns"],
                "pending_decisions": stats["pending_decisions"],
            }
        )

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus metrics: decisions, events by outcome, snapshot age, queues, latency."""
        return Response(registry.render(), media_type=registry.content_type)

    @app.post(
        "/v1/campaigns",
        status_code=201,
        tags=["campaigns"],
        openapi_extra=body_doc(CreateCampaignBody),
    )
    async def create_campaign(request: Request) -> Response:
        """Create a campaign from a brief; its first variants are generated (or given)."""
        who = await principal(request)
        body = await _parse(request, CreateCampaignBody, max_body_bytes)
        variants = (
            [v.model_dump(exclude_none=True) for v in body.variants] if body.variants else None
        )
        view = await run_in_threadpool(
            lambda: engine.create_campaign(
                body.brief,
                tenant=who.tenant,
                n_candidates=body.n_candidates,
                objective=body.objective,
                variants=variants,
                impressions_reported_separately=body.impressions_reported_separately,
                name=body.name,
            )
        )
        return _json(view, 201)

    @app.get("/v1/campaigns", tags=["campaigns"], openapi_extra=security)
    async def list_campaigns(request: Request) -> Response:
        """The caller's campaigns."""
        who = await principal(request)
        rows = await run_in_threadpool(engine.campaigns, who.tenant)
        return _json({"campaigns": rows})

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"], openapi_extra=security)
    async def show_campaign(campaign_id: str, request: Request) -> Response:
        """One campaign: variants with counts and posteriors, winner, data quality."""
        who = await principal(request)
        view = await run_in_threadpool(lambda: engine.campaign(campaign_id, tenant=who.tenant))
        return _json(view)

    @app.post(
        "/v1/campaigns/{campaign_id}/variants",
        status_code=201,
        tags=["campaigns"],
        openapi_extra=body_doc(AddVariantsBody),
    )
    async def add_variants(campaign_id: str, request: Request) -> Response:
        """Add variants (given, or ``n`` generated); they get traffic at once."""
        who = await principal(request)
        body = await _parse(request, AddVariantsBody, max_body_bytes)
        if (body.variants is None) == (body.n is None):
            raise _HTTPError(
                422, "invalid_request", "give exactly one of 'variants' or 'n'", "variants"
            )
        variants = (
            [v.model_dump(exclude_none=True) for v in body.variants] if body.variants else None
        )
        added = await run_in_threadpool(
            lambda: engine.add_variants(campaign_id, variants, n=body.n, tenant=who.tenant)
        )
        return _json({"campaign_id": campaign_id, "added": added}, 201)

    @app.post(
        "/v1/campaigns/{campaign_id}/retire/{variant_id}",
        tags=["campaigns"],
        openapi_extra=security,
    )
    async def retire(campaign_id: str, variant_id: str, request: Request) -> Response:
        """Retire a variant: it gets no further traffic."""
        who = await principal(request)
        await run_in_threadpool(lambda: engine.retire(campaign_id, variant_id, tenant=who.tenant))
        return _json({"campaign_id": campaign_id, "variant_id": variant_id, "status": "retired"})

    @app.post("/v1/keys", status_code=201, tags=["admin"], openapi_extra=body_doc(KeyBody))
    async def create_key(request: Request) -> Response:
        """Create an API key for a tenant (admin keys only); the key is shown once."""
        who = await principal(request)
        if not who.admin:
            raise _HTTPError(403, "forbidden", "only admin keys can create keys", "authorization")
        body = await _parse(request, KeyBody, max_body_bytes)
        try:
            tenant = validate_tenant(body.tenant)
        except InvalidRequest as exc:
            raise _HTTPError(422, "invalid_request", str(exc), "tenant") from None
        key = await run_in_threadpool(lambda: keys.create(tenant=tenant, admin=body.admin))
        return _json({"tenant": tenant, "api_key": key, "admin": body.admin}, 201)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "ApiKey": {"type": "http", "scheme": "bearer"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
