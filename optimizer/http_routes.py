"""The HTTP service's routes: serving (choose, events), operations, campaigns, keys.

Each route finds what it works with (engine, key ring, metrics, body limit) in the
application's :class:`ServiceState`, set by ``create_app``. Bodies are read and validated by
:mod:`adloop.optimizer.http_codec`; errors raised here are answered by the handlers of
:mod:`adloop.optimizer.http_errors`. Blocking store work runs on the threadpool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from adloop.optimizer.auth import KeyRing, Principal, validate_tenant
from adloop.optimizer.engine import Engine
from adloop.optimizer.errors import InvalidRequest
from adloop.optimizer.http_codec import (
    api_key_from,
    decode_choose,
    decode_events,
    encode_plain,
    json_response,
    parse_body,
    read_body,
)
from adloop.optimizer.http_errors import HTTPError
from adloop.optimizer.http_metrics import ServiceMetrics
from adloop.optimizer.http_models import (
    AddVariantsBody,
    ChooseBody,
    CreateCampaignBody,
    EventsBody,
    KeyBody,
)

__all__ = ["CHOOSE_PATH", "ServiceState", "add_routes", "install_openapi"]

#: The hottest route; :class:`~adloop.optimizer.http_fast_choose.ChooseFastPath` stands in
#: for it on plainly valid requests.
CHOOSE_PATH = "/v1/campaigns/{campaign_id}/choose"


@dataclass(frozen=True)
class ServiceState:
    """What the routes work with, kept in ``app.state.service``."""

    engine: Engine
    keys: KeyRing
    metrics: ServiceMetrics
    max_body_bytes: int


def _state(request: Request) -> ServiceState:
    return request.app.state.service


async def _principal(request: Request, keys: KeyRing) -> Principal:
    """Who is calling, from the API key; :class:`HTTPError` 401 when missing or unknown."""
    key = api_key_from(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if not key:
        raise HTTPError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>'",
            "authorization",
        )
    found = keys.cached(key)
    if found is None:
        found = await run_in_threadpool(keys.authenticate, key)
    if found is None:
        raise HTTPError(401, "unauthorized", "unknown API key", "authorization")
    return found


_SECURITY: dict[str, Any] = {"security": [{"ApiKey": []}]}
_CAMPAIGN_PARAMETER = {
    "name": "campaign_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Campaign Id"},
}


def _body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """OpenAPI for a route that reads its body itself (so FastAPI cannot see the model)."""
    return {
        **_SECURITY,
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
    }


# -- serving --------------------------------------------------------------------------------


async def choose(request: Request) -> Response:
    """Choose the variant to show (or ``n`` of them); the decision is logged."""
    # The path parameter is read from the matched route rather than declared, which skips
    # FastAPI's per-request parameter validation on the hottest route.
    campaign_id = request.path_params["campaign_id"]
    state = _state(request)
    who = await _principal(request, state.keys)
    body = decode_choose(await read_body(request, state.max_body_bytes))
    if body.n is not None:
        if body.request_id is not None:
            raise HTTPError(
                422, "invalid_request", "'request_id' applies to single choices", "request_id"
            )
        choices = state.engine.choose_many(
            campaign_id, body.n, segment=body.segment, tenant=who.tenant
        )
        return json_response({"decisions": [c.to_dict() for c in choices]})
    choice = state.engine.choose(
        campaign_id, segment=body.segment, request_id=body.request_id, tenant=who.tenant
    )
    return Response(encode_plain(choice.to_dict()), media_type="application/json")


async def post_events(request: Request) -> Response:
    """Append events; answered after the batch is committed (2xx = durable)."""
    state = _state(request)
    who = await _principal(request, state.keys)
    rows = decode_events(await read_body(request, state.max_body_bytes), state.engine.clock())
    ingest, events = state.metrics.ingest, state.metrics.events
    ingest.events += rows.num_rows
    ingest.requests += 1
    try:
        # The future resolves on the writer thread after the COMMIT; awaiting it holds no
        # threadpool thread while the batch waits for its group commit.
        result = await asyncio.wrap_future(state.engine.submit_record(rows, tenant=who.tenant))
    finally:
        ingest.events -= rows.num_rows
        ingest.requests -= 1
    events.inc(result.accepted, outcome="accepted")
    events.inc(result.duplicates, outcome="duplicate")
    events.inc(result.rejected, outcome="rejected")
    return json_response(result.to_dict())


# -- operations -----------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness and readiness: the engine is up and the store answers a read."""
    engine = _state(request).engine
    try:
        await run_in_threadpool(engine.store.api_key, "0" * 64)
    except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
        return json_response({"status": "unavailable", "error": str(exc)}, 503)
    stats = engine.stats()
    return json_response(
        {
            "status": "ok",
            "campaigns": stats["campaigns"],
            "pending_decisions": stats["pending_decisions"],
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics: decisions, events by outcome, snapshot age, queues, latency."""
    registry = _state(request).metrics.registry
    return Response(registry.render(), media_type=registry.content_type)


# -- campaigns ------------------------------------------------------------------------------


async def create_campaign(request: Request) -> Response:
    """Create a campaign from a brief; its first variants are generated (or given)."""
    state = _state(request)
    who = await _principal(request, state.keys)
    body = parse_body(await read_body(request, state.max_body_bytes), CreateCampaignBody)
    variants = [v.model_dump(exclude_none=True) for v in body.variants] if body.variants else None
    view = await run_in_threadpool(
        lambda: state.engine.create_campaign(
            body.brief,
            tenant=who.tenant,
            n_candidates=body.n_candidates,
            objective=body.objective,
            variants=variants,
            impressions_reported_separately=body.impressions_reported_separately,
            name=body.name,
        )
    )
    return json_response(view, 201)


async def list_campaigns(request: Request) -> Response:
    """The caller's campaigns."""
    state = _state(request)
    who = await _principal(request, state.keys)
    rows = await run_in_threadpool(state.engine.campaigns, who.tenant)
    return json_response({"campaigns": rows})


async def show_campaign(campaign_id: str, request: Request) -> Response:
    """One campaign: variants with counts and posteriors, winner, data quality."""
    state = _state(request)
    who = await _principal(request, state.keys)
    view = await run_in_threadpool(lambda: state.engine.campaign(campaign_id, tenant=who.tenant))
    return json_response(view)


async def add_variants(campaign_id: str, request: Request) -> Response:
    """Add variants (given, or ``n`` generated); they get traffic at once."""
    state = _state(request)
    who = await _principal(request, state.keys)
    body = parse_body(await read_body(request, state.max_body_bytes), AddVariantsBody)
    if (body.variants is None) == (body.n is None):
        raise HTTPError(422, "invalid_request", "give exactly one of 'variants' or 'n'", "variants")
    variants = [v.model_dump(exclude_none=True) for v in body.variants] if body.variants else None
    added = await run_in_threadpool(
        lambda: state.engine.add_variants(campaign_id, variants, n=body.n, tenant=who.tenant)
    )
    return json_response({"campaign_id": campaign_id, "added": added}, 201)


async def retire(campaign_id: str, variant_id: str, request: Request) -> Response:
    """Retire a variant: it gets no further traffic."""
    state = _state(request)
    who = await _principal(request, state.keys)
    await run_in_threadpool(lambda: state.engine.retire(campaign_id, variant_id, tenant=who.tenant))
    return json_response(
        {"campaign_id": campaign_id, "variant_id": variant_id, "status": "retired"}
    )


# -- keys -----------------------------------------------------------------------------------


async def create_key(request: Request) -> Response:
    """Create an API key for a tenant (admin keys only); the key is shown once."""
    state = _state(request)
    who = await _principal(request, state.keys)
    if not who.admin:
        raise HTTPError(403, "forbidden", "only admin keys can create keys", "authorization")
    body = parse_body(await read_body(request, state.max_body_bytes), KeyBody)
    try:
        tenant = validate_tenant(body.tenant)
    except InvalidRequest as exc:
        raise HTTPError(422, "invalid_request", str(exc), "tenant") from None
    key = await run_in_threadpool(lambda: state.keys.create(tenant=tenant, admin=body.admin))
    return json_response({"tenant": tenant, "api_key": key, "admin": body.admin}, 201)


# -- assembly -------------------------------------------------------------------------------


async def _bare() -> dict[str, str]:
    return {"status": "ok"}


def add_routes(app: FastAPI, *, bare_endpoint: bool = False) -> None:
    """Mount the routes on ``app``; they find their engine and keys in ``app.state.service``.

    Serving routes come first: routes are matched in order, and these are hot.
    ``bare_endpoint`` also mounts ``GET|POST /bench/bare``, a constant answer the service
    benchmark uses as the ceiling of the stack (GET and POST, so it can be sent the same
    request shape as ``choose``).
    """
    if bare_endpoint:
        app.add_api_route("/bench/bare", _bare, methods=["GET", "POST"], include_in_schema=False)
    choose_doc = {**_body_doc(ChooseBody, required=False), "parameters": [_CAMPAIGN_PARAMETER]}
    campaign, doc = "/v1/campaigns/{campaign_id}", _body_doc
    # method, path, endpoint, tag, status on success, OpenAPI extras
    routes: list[tuple[str, str, Callable[..., Any], str, int, dict[str, Any] | None]] = [
        ("POST", CHOOSE_PATH, choose, "serving", 200, choose_doc),
        ("POST", "/v1/events", post_events, "serving", 200, doc(EventsBody)),
        ("GET", "/healthz", healthz, "ops", 200, None),
        ("GET", "/metrics", metrics, "ops", 200, None),
        ("POST", "/v1/campaigns", create_campaign, "campaigns", 201, doc(CreateCampaignBody)),
        ("GET", "/v1/campaigns", list_campaigns, "campaigns", 200, _SECURITY),
        ("GET", campaign, show_campaign, "campaigns", 200, _SECURITY),
        ("POST", f"{campaign}/variants", add_variants, "campaigns", 201, doc(AddVariantsBody)),
        ("POST", f"{campaign}/retire/{{variant_id}}", retire, "campaigns", 200, _SECURITY),
        ("POST", "/v1/keys", create_key, "admin", 201, doc(KeyBody)),
    ]
    for method, path, endpoint, tag, status, extras in routes:
        app.add_api_route(
            path, endpoint, methods=[method], tags=[tag], status_code=status, openapi_extra=extras
        )


def install_openapi(app: FastAPI) -> None:
    """Document the bearer-key scheme the routes require in the OpenAPI schema.

    The routes read the key themselves (no FastAPI security dependency on the hot path), so
    the scheme is added to the generated schema, as FastAPI's "Extending OpenAPI" guide does.
    """

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
