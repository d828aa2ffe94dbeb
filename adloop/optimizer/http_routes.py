"""The HTTP service's routes: serving (choose, events), operations, campaigns, keys.

Each route finds what it works with (engine, key ring, failed-auth limiter, metrics, body
limit) in the application's :class:`ServiceState`, set by ``create_app``. Bodies are read and
validated by :mod:`adloop.optimizer.http_codec`; errors raised here are answered by the
handlers of :mod:`adloop.optimizer.http_errors`; each route's OpenAPI entry comes from
:mod:`adloop.optimizer.http_openapi`. Blocking store work runs on the threadpool.

Keys: an admin key is an operator's key for the whole deployment. It can create, list and
revoke keys for every tenant and scrape every tenant's metrics; for campaigns it acts as its
own tenant, like any key. Give admin keys to operators only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from adloop.optimizer.auth import (
    Principal,
    key_id,
    validate_tenant,
)
from adloop.optimizer.errors import HTTPError, InvalidRequest
from adloop.optimizer.events import campaign_counts, submit_visible
from adloop.optimizer.http_auth import ServiceState, authenticate
from adloop.optimizer.http_codec import (
    api_key_from,
    decode_choose,
    decode_events,
    encode_plain,
    json_response,
    parse_body,
    read_body,
)
from adloop.optimizer.http_metrics import scrape_scope
from adloop.optimizer.http_models import (
    AddVariantsBody,
    ChooseBody,
    CreateCampaignBody,
    EventsBody,
    KeyBody,
    ReviewBody,
)
from adloop.optimizer.http_openapi import install_openapi, route_doc
from adloop.optimizer.serving import SERVABLE
from adloop.storage import ConflictError, InvalidArgumentError, NotFoundError, utc_now

__all__ = ["CHOOSE_PATH", "add_routes", "install_openapi"]

#: The hottest route; :class:`~adloop.optimizer.http_fast_choose.ChooseFastPath` stands in
#: for it on plainly valid requests.
CHOOSE_PATH = "/v1/campaigns/{campaign_id}/choose"

#: Seconds a client is asked to wait before sending a batch the broker did not acknowledge.
_BROKER_RETRY_AFTER = 5


def _state(request: Request) -> ServiceState:
    return request.app.state.service


async def _principal(request: Request, state: ServiceState) -> Principal:
    """Who is calling (see :func:`~adloop.optimizer.http_auth.authenticate`)."""
    key = api_key_from(request.headers.get("authorization"), request.headers.get("x-api-key"))
    return await authenticate(state, key, request.client.host if request.client else "unknown")


async def _admin(request: Request, state: ServiceState) -> Principal:
    """The caller, who must hold an admin key (else 403)."""
    who = await _principal(request, state)
    if not who.admin:
        raise HTTPError(403, "forbidden", "only admin keys can manage keys", "authorization")
    return who


_CAMPAIGN_PARAMETER = {
    "name": "campaign_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Campaign Id"},
}
_KEY_ID_HELP = "The key's id: the first 16 (or more) hex characters of its SHA-256."
_HEALTH_DOWN = {
    "type": "object",
    "properties": {"status": {"const": "unavailable"}, "error": {"type": "string"}},
    "required": ["status", "error"],
}


# -- serving --------------------------------------------------------------------------------


async def choose(request: Request) -> Response:
    """Choose the variant to show (or ``n`` of them); the decision is logged."""
    # The path parameter is read from the matched route rather than declared, which skips
    # FastAPI's per-request parameter validation on the hottest route.
    campaign_id = request.path_params["campaign_id"]
    state = _state(request)
    who = await _principal(request, state)
    body = decode_choose(await read_body(request, state.max_body_bytes))
    if body.n is not None:
        if body.request_id is not None:
            raise HTTPError(
                422, "invalid_request", "'request_id' applies to single choices", "request_id"
            )
        choices = state.chooser.choose_many(
            campaign_id, body.n, segment=body.segment, tenant=who.tenant
        )
        return json_response({"decisions": [c.to_dict() for c in choices]})
    choice = state.chooser.choose(
        campaign_id, segment=body.segment, request_id=body.request_id, tenant=who.tenant
    )
    return Response(encode_plain(choice.to_dict()), media_type="application/json")


async def post_events(request: Request) -> Response:
    """Append events; answered after the batch is committed (2xx = durable)."""
    state = _state(request)
    who = await _principal(request, state)
    rows = decode_events(await read_body(request, state.max_body_bytes), state.engine.clock())
    if state.scale_out is not None:
        return await _publish_events(state, rows, who.tenant)
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


async def _publish_events(state: ServiceState, rows: Any, tenant: str) -> Response:
    """Scaled out: publish the batch; 202 once the broker acknowledged every event of it.

    Rows naming a campaign the caller has no snapshot of are rejected here as ``unknown
    campaign`` (as the one-machine store does); what the aggregator then counts, drops as a
    duplicate or rejects is asynchronous. If the broker does not acknowledge within
    ``ack_timeout_s`` the answer is 503 with ``Retry-After``: nothing of the batch is
    acknowledged, and sending it again is safe (a repeated event counts once).
    """
    rows, counts = campaign_counts(rows)
    hidden = state.chooser.hidden_from(tenant, counts)
    ingest, events = state.metrics.ingest, state.metrics.events
    ingest.events += rows.num_rows
    ingest.requests += 1
    try:
        future = asyncio.wrap_future(submit_visible(state.chooser, rows, counts, hidden))
        # asyncio.wait, unlike wait_for, leaves the publisher's future alone on a timeout
        await asyncio.wait([future], timeout=state.scale_out.ack_timeout_s)
        if not future.done() or future.exception() is not None:
            reason = "did not acknowledge it in time" if not future.done() else "refused it"
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no warning
            raise HTTPError(
                503, "broker_unavailable",
                f"the event broker {reason} ({state.scale_out.ack_timeout_s:g} s); none of "
                "the batch is acknowledged: send it again (events already in the log count "
                "once)", None, headers={"Retry-After": str(_BROKER_RETRY_AFTER)},
            )  # fmt: skip
        result = future.result()
    finally:
        ingest.events -= rows.num_rows
        ingest.requests -= 1
    events.inc(result.accepted, outcome="published")
    events.inc(result.rejected, outcome="rejected")
    answer = {"published": result.accepted, "rejected": result.rejected}
    answer["errors"] = [error.to_dict() for error in result.errors]
    answer["counts"] = "asynchronous"
    return json_response(answer, 202)


async def _share(state: ServiceState, campaign_id: str, tenant: str) -> None:
    """Scaled out: register the campaign's variants in the shared store, so every serving
    process chooses among them once the refresher built their snapshot."""
    if state.scale_out is None:
        return
    stored = await run_in_threadpool(state.engine.store.variants, campaign_id)
    variants = [
        {"variant_id": v["variant_id"], "text": v["text"], "served": v["status"] in SERVABLE}
        for v in stored
    ]
    try:
        await run_in_threadpool(state.scale_out.register, tenant, campaign_id, variants)
    except Exception as exc:  # noqa: BLE001 - the operator must hear it: it is not served
        raise HTTPError(
            503, "store_unavailable",
            f"saved on this server, but the shared store did not take campaign "
            f"{campaign_id!r}'s variants ({type(exc).__name__}: {exc}); it is not served "
            "until a later change of it registers them", "campaign_id",
            headers={"Retry-After": str(_BROKER_RETRY_AFTER)},
        ) from None  # fmt: skip


# -- operations -----------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness and readiness: the engine is up and the store answers a read."""
    engine = _state(request).engine
    try:
        await run_in_threadpool(engine.store.api_key, "0" * 64)
    except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
        return json_response({"status": "unavailable", "error": str(exc)}, 503)
    # [hardening: storage faults] a failing write (full disk, I/O) means "not ready" too
    health = engine.store.write_health()
    if health.fault is not None:
        status = "disk_full" if health.disk_full else "unavailable"
        payload = {"status": status, "error": health.fault, "kept": health.deferred_rows}
        return json_response(payload, 503)
    stats = engine.stats()
    return json_response(
        {
            "status": "ok",
            "campaigns": stats["campaigns"],
            "pending_decisions": stats["pending_decisions"],
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics: decisions, events by outcome, snapshot age, queues, latency.

    Without a key: only series that name no campaign (totals, queues, latency by route).
    With a tenant key: also that tenant's campaigns' series. With an admin key: everything.
    """
    state = _state(request)
    visible = scrape_scope(False, None)
    if api_key_from(request.headers.get("authorization"), request.headers.get("x-api-key")):
        who = await _principal(request, state)
        own = None
        if not who.admin:
            rows = await run_in_threadpool(state.engine.campaigns, who.tenant)
            own = {row["campaign_id"] for row in rows}
        visible = scrape_scope(who.admin, own)
    registry = state.metrics.registry
    return Response(registry.render(visible), media_type=registry.content_type)


# -- campaigns ------------------------------------------------------------------------------


async def create_campaign(request: Request) -> Response:
    """Create a campaign from a brief; its first variants are generated (or given)."""
    state = _state(request)
    who = await _principal(request, state)
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
            auto_approve=body.auto_approve,
            per_segment=body.per_segment,
        )
    )
    await _share(state, view["campaign_id"], who.tenant)
    return json_response(view, 201)


async def list_campaigns(request: Request) -> Response:
    """The caller's campaigns."""
    state = _state(request)
    who = await _principal(request, state)
    rows = await run_in_threadpool(state.engine.campaigns, who.tenant)
    return json_response({"campaigns": rows})


async def show_campaign(campaign_id: str, request: Request) -> Response:
    """One campaign: variants with counts and posteriors, winner, data quality."""
    state = _state(request)
    who = await _principal(request, state)
    view = await run_in_threadpool(lambda: state.engine.campaign(campaign_id, tenant=who.tenant))
    return json_response(view)


async def add_variants(campaign_id: str, request: Request) -> Response:
    """Add variants (given, or ``n`` generated); they get traffic at once.

    A listed variant may name ``segments`` (served only to those); ``segment`` with ``n``
    writes the generated ones for that segment of the brief and targets them to it.
    """
    state = _state(request)
    who = await _principal(request, state)
    body = parse_body(await read_body(request, state.max_body_bytes), AddVariantsBody)
    if (body.variants is None) == (body.n is None):
        raise HTTPError(422, "invalid_request", "give exactly one of 'variants' or 'n'", "variants")
    variants = [v.model_dump(exclude_none=True) for v in body.variants] if body.variants else None
    added = await run_in_threadpool(
        lambda: state.engine.add_variants(
            campaign_id, variants, n=body.n, tenant=who.tenant, segment=body.segment
        )
    )
    await _share(state, campaign_id, who.tenant)
    return json_response({"campaign_id": campaign_id, "added": added}, 201)


async def retire(campaign_id: str, variant_id: str, request: Request) -> Response:
    """Retire a variant: it gets no further traffic."""
    state = _state(request)
    who = await _principal(request, state)
    await run_in_threadpool(lambda: state.engine.retire(campaign_id, variant_id, tenant=who.tenant))
    await _share(state, campaign_id, who.tenant)
    return json_response(
        {"campaign_id": campaign_id, "variant_id": variant_id, "status": "retired"}
    )


async def _review(campaign_id: str, variant_id: str, request: Request, action: str) -> Response:
    """Approve or reject a variant as the caller (tenant and key id are recorded)."""
    state = _state(request)
    who = await _principal(request, state)
    body = parse_body(await read_body(request, state.max_body_bytes), ReviewBody, empty_ok=True)
    key = api_key_from(request.headers.get("authorization"), request.headers.get("x-api-key"))
    reviewer = f"{who.tenant} (key {key_id(key)})" if key else who.tenant
    done = await run_in_threadpool(
        lambda: state.engine.review(
            campaign_id, variant_id, action, reviewer=reviewer, note=body.note, tenant=who.tenant
        )
    )
    await _share(state, campaign_id, who.tenant)
    return json_response(
        {
            "campaign_id": campaign_id,
            "variant_id": variant_id,
            "status": done["status"],
            "review": {
                "action": done["action"],
                "by": done["reviewer"],
                "at": done["reviewed_at"],
                "note": done["note"],
            },
        }
    )


async def approve_variant(campaign_id: str, variant_id: str, request: Request) -> Response:
    """Approve a variant awaiting review (or one rejected before): it serves at once."""
    return await _review(campaign_id, variant_id, request, "approve")


async def reject_variant(campaign_id: str, variant_id: str, request: Request) -> Response:
    """Reject a variant awaiting review: it never serves."""
    return await _review(campaign_id, variant_id, request, "reject")


# -- keys -----------------------------------------------------------------------------------


async def create_key(request: Request) -> Response:
    """Create an API key for any tenant (admin keys only); the key is shown once."""
    state = _state(request)
    await _admin(request, state)
    body = parse_body(await read_body(request, state.max_body_bytes), KeyBody)
    try:
        tenant = validate_tenant(body.tenant)
    except InvalidRequest as exc:
        raise HTTPError(422, "invalid_request", str(exc), "tenant") from None
    expires_at = None
    if body.expires_in_seconds is not None:
        expires_at = utc_now() + timedelta(seconds=body.expires_in_seconds)
    key = await run_in_threadpool(
        lambda: state.keys.create(tenant=tenant, admin=body.admin, expires_at=expires_at)
    )
    return json_response(
        {
            "tenant": tenant,
            "api_key": key,
            "admin": body.admin,
            "key_id": key_id(key),
            "expires_at": expires_at,
        },
        201,
    )


async def list_keys(request: Request, tenant: str | None = None) -> Response:
    """Every stored key (of ``tenant`` when given) and the file's keys, never the secrets."""
    state = _state(request)
    await _admin(request, state)
    rows = await run_in_threadpool(state.keys.keys, tenant)
    return json_response({"keys": rows})


async def revoke_key(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16,64}$", description=_KEY_ID_HELP)],
    request: Request,
) -> Response:
    """Revoke a stored key by the id ``GET /v1/keys`` lists; it stops working at once."""
    state = _state(request)
    await _admin(request, state)
    try:
        row = await run_in_threadpool(state.keys.revoke, key_id)
    except NotFoundError as exc:
        raise HTTPError(404, "not_found", str(exc), "key_id") from None
    except ConflictError as exc:
        raise HTTPError(409, "ambiguous_key_id", str(exc), "key_id") from None
    except InvalidArgumentError as exc:
        raise HTTPError(422, "invalid_request", str(exc), "key_id") from None
    return json_response(row)


# -- assembly -------------------------------------------------------------------------------


def add_routes(app: FastAPI) -> None:
    """Mount the routes on ``app``; they find their engine and keys in ``app.state.service``.

    Serving routes come first: routes are matched in order, and these are hot.
    ``bare_endpoint`` also mounts ``GET|POST /bench/bare``, a constant answer the service
    benchmark uses as the ceiling of the stack (GET and POST, so it can be sent the same
    request shape as ``choose``).
    """
    choose_doc = route_doc(404, 409, 503, 507, body=ChooseBody, body_required=False)
    choose_doc["openapi_extra"]["parameters"] = [_CAMPAIGN_PARAMETER]
    campaign, doc = "/v1/campaigns/{campaign_id}", route_doc
    metrics_doc = route_doc(secured=False)
    metrics_doc["responses"].update(route_doc()["responses"])  # when a key is sent
    metrics_doc["responses"][200] = {
        "description": "Prometheus text format 0.0.4.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    metrics_doc["openapi_extra"] = {"security": [{}, {"ApiKey": []}]}
    health_doc: dict[str, Any] = {
        "responses": {
            503: {
                "description": "The store does not answer.",
                "content": {"application/json": {"schema": _HEALTH_DOWN}},
            }
        }
    }
    review_doc = (
        "campaigns",
        200,
        doc(404, 409, 503, 507, body=ReviewBody, body_required=False),
    )
    # method, path, endpoint, tag, status on success, OpenAPI (route_doc)
    routes: list[tuple[str, str, Callable[..., Any], str, int, dict[str, Any]]] = [
        ("POST", CHOOSE_PATH, choose, "serving", 200, choose_doc),
        ("POST", "/v1/events", post_events, "serving", 200, doc(503, 507, body=EventsBody)),
        ("GET", "/healthz", healthz, "ops", 200, health_doc),
        ("GET", "/metrics", metrics, "ops", 200, metrics_doc),
        (
            "POST",
            "/v1/campaigns",
            create_campaign,
            "campaigns",
            201,
            doc(409, 503, 507, body=CreateCampaignBody),
        ),
        ("GET", "/v1/campaigns", list_campaigns, "campaigns", 200, doc()),
        ("GET", campaign, show_campaign, "campaigns", 200, doc(404, 422)),
        (
            "POST",
            f"{campaign}/variants",
            add_variants,
            "campaigns",
            201,
            doc(404, 409, 503, 507, body=AddVariantsBody),
        ),
        ("POST", f"{campaign}/retire/{{variant_id}}", retire, "campaigns", 200, doc(404, 422, 503)),
        ("POST", f"{campaign}/variants/{{variant_id}}/approve", approve_variant, *review_doc),
        ("POST", f"{campaign}/variants/{{variant_id}}/reject", reject_variant, *review_doc),
        ("POST", "/v1/keys", create_key, "admin", 201, doc(403, 503, 507, body=KeyBody)),
        ("GET", "/v1/keys", list_keys, "admin", 200, doc(403, 422)),
        ("DELETE", "/v1/keys/{key_id}", revoke_key, "admin", 200, doc(403, 404, 409, 422, 503)),
    ]
    for method, path, endpoint, tag, status, documented in routes:
        app.add_api_route(
            path,
            endpoint,
            methods=[method],
            tags=[tag],
            status_code=status,
            **({"response_class": PlainTextResponse} if endpoint is metrics else {}),
            **documented,
        )
