"""The campaign dashboard at ``/ui``, served by the same application as the API.

Sign-in takes an API key and keeps it in a cookie (HttpOnly, SameSite=Strict, Secure over
HTTPS, path ``/ui``); every request of the dashboard then authenticates that key exactly as
the API does (:func:`~adloop.optimizer.http_auth.authenticate`: same key ring, same failed-
attempt limiter, revocations effective within a second). A page shows the key's tenant only:
another tenant's campaign is a 404, as in the API. Without a valid key, pages redirect to the
sign-in form and fragments answer 401 (htmx then loads the form).

Pages: ``/ui`` (campaigns), ``/ui/campaigns/{id}`` (one campaign), each with a ``live``
fragment polled every two seconds; ``POST`` actions approve, reject, retire and add
variants; ``.../export/{table}.csv`` exports a table; ``/ui/static/*`` serves the stylesheet
and the vendored htmx (no CDN). The routes are left out of the OpenAPI document.

Example::

    app = create_app(engine)        # mounts the dashboard
    # open http://127.0.0.1:8000/ui and sign in with a tenant's key
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adloop.optimizer import dashboard_pages as pages
from adloop.optimizer.auth import Principal, key_id
from adloop.optimizer.dashboard_data import campaign_list, campaign_page
from adloop.optimizer.dashboard_export import TABLES, campaigns_csv, table_csv
from adloop.optimizer.errors import (
    CampaignNotFound,
    HTTPError,
    InvalidRequest,
    OptimizerError,
    VariantNotFound,
)
from adloop.optimizer.http_auth import ServiceState, authenticate
from adloop.storage import StorageError

__all__ = ["COOKIE", "install_dashboard"]

#: The cookie holding the signed-in key.
COOKIE = "adloop_key"
_STATIC = Path(__file__).parent / "dashboard_static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
#: Scripts and styles from this server only; no inline script, no frames, forms to here.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_MAX_FORM_BYTES = 64 * 1024


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(text, status, headers={**_SECURITY_HEADERS, **(headers or {})})


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _who(request: Request) -> tuple[Principal, str] | None:
    """The signed-in tenant and key, authenticated exactly as the API authenticates.

    None when the cookie is missing or its key is refused: the browser is sent to sign in.
    """
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    try:
        return await authenticate(_state(request), key, _client(request)), key
    except HTTPError as exc:
        if exc.status == 401:
            return None
        raise


def _same_origin(request: Request) -> bool:
    """A form post comes from this site (defence in depth beside the SameSite cookie)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # old browsers send neither on same-site posts; the cookie still guards
    return urlsplit(origin).netloc == request.headers.get("host")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPError(413, "payload_too_large", "form too large", None)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _signed_out(request: Request) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
    target = quote(request.url.path)
    return RedirectResponse(f"/ui/login?next={target}", 303, headers=_SECURITY_HEADERS)


def _page(
    handler: Callable[[Request, Principal, str], Any],
) -> Callable[[Request], Any]:
    """Wrap a dashboard handler: sign-in first, HTML errors for missing campaigns."""

    async def endpoint(request: Request) -> Response:
        signed_in = await _who(request)
        if signed_in is None:
            return _signed_out(request)
        who, key = signed_in
        if request.method == "POST" and not _same_origin(request):
            return _html(pages.error_page(403, "Cross-site form posts are refused."), 403)
        try:
            return await handler(request, who, key)
        except CampaignNotFound as exc:
            return _html(pages.error_page(404, str(exc), tenant=who.tenant), 404)

    return endpoint


# -- sign-in ---------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    """The sign-in form."""
    return _html(pages.login_page(next_path=_safe_next(request.query_params.get("next"))))


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard itself (no open redirect)."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


async def login(request: Request) -> Response:
    """Check the key as the API would, then keep it in the session cookie."""
    form = await _form(request)
    key = form.get("key", "").strip()
    try:
        who = await authenticate(_state(request), key or None, _client(request))
    except HTTPError as exc:
        message = "Unknown, revoked or expired key." if exc.status == 401 else exc.message
        return _html(pages.login_page(message, _safe_next(form.get("next"))), exc.status)
    response = RedirectResponse(_safe_next(form.get("next")), 303, headers=_SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        key,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    del who  # authenticated: the key is good
    return response


async def logout(request: Request) -> Response:
    """Forget the key."""
    response = RedirectResponse("/ui/login", 303, headers=_SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


# -- pages -----------------------------------------------------------------------------------


async def campaigns(request: Request, who: Principal, key: str) -> Response:
    """The tenant's campaigns."""
    engine = _state(request).engine
    rows = await run_in_threadpool(campaign_list, engine, tenant=who.tenant)
    return _html(pages.campaigns_page(rows, who.tenant))


async def campaigns_fragment(request: Request, who: Principal, key: str) -> Response:
    """The campaigns table alone (polled)."""
    engine = _state(request).engine
    rows = await run_in_threadpool(campaign_list, engine, tenant=who.tenant)
    return _html(pages.live_list(rows))


async def campaigns_export(request: Request, who: Principal, key: str) -> Response:
    """The campaigns table as CSV."""
    engine = _state(request).engine
    rows = await run_in_threadpool(campaign_list, engine, tenant=who.tenant)
    return _csv(campaigns_csv(rows), f"campaigns-{who.tenant}.csv")


async def _campaign_data(request: Request, who: Principal) -> dict[str, Any]:
    engine = _state(request).engine
    campaign_id = request.path_params["campaign_id"]
    return await run_in_threadpool(lambda: campaign_page(engine, campaign_id, tenant=who.tenant))


async def campaign(request: Request, who: Principal, key: str) -> Response:
    """One campaign's page."""
    page = await _campaign_data(request, who)
    message = request.query_params.get("done")
    return _html(pages.campaign_page(page, who.tenant, message=message))


async def campaign_fragment(request: Request, who: Principal, key: str) -> Response:
    """The live part of a campaign's page (polled)."""
    return _html(pages.live_campaign(await _campaign_data(request, who)))


async def campaign_export(request: Request, who: Principal, key: str) -> Response:
    """One of the campaign page's tables as CSV."""
    table = request.path_params["table"]
    if table not in TABLES:
        return _html(pages.error_page(404, f"no table {table!r}", tenant=who.tenant), 404)
    page = await _campaign_data(request, who)
    campaign_id = page["view"]["campaign_id"]
    return _csv(table_csv(page, table), f"{campaign_id}-{table}.csv")


def _csv(text: str, filename: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={**_SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{safe}"'},
    )


# -- actions ---------------------------------------------------------------------------------


async def _act(request: Request, who: Principal, work: Callable[[], str]) -> Response:
    """Run an action, then answer the live fragment (htmx) or redirect to the page."""
    try:
        message = await run_in_threadpool(work)
    except CampaignNotFound:
        raise
    except (OptimizerError, VariantNotFound, StorageError, ValueError) as exc:
        message = f"Not done: {exc}"
    campaign_id = request.path_params["campaign_id"]
    if request.headers.get("hx-request"):
        page = await _campaign_data(request, who)
        return _html(pages.live_campaign(page, message=message))
    target = f"/ui/campaigns/{quote(campaign_id)}?done={quote(message)}"
    return RedirectResponse(target, 303, headers=_SECURITY_HEADERS)


def _reviewer(who: Principal, key: str) -> str:
    return f"{who.tenant} (key {key_id(key)}, dashboard)"


def _review(action: str) -> Callable[[Request, Principal, str], Any]:
    """The handler approving (or rejecting) a variant that awaits review."""

    async def review(request: Request, who: Principal, key: str) -> Response:
        engine = _state(request).engine
        campaign_id = request.path_params["campaign_id"]
        variant_id = request.path_params["variant_id"]

        def work() -> str:
            engine.review(
                campaign_id, variant_id, action, reviewer=_reviewer(who, key), tenant=who.tenant
            )
            return f"{'Approved' if action == 'approve' else 'Rejected'} {variant_id}."

        return await _act(request, who, work)

    return review


async def retire(request: Request, who: Principal, key: str) -> Response:
    """Retire a variant: it gets no more traffic."""
    engine = _state(request).engine
    campaign_id = request.path_params["campaign_id"]
    variant_id = request.path_params["variant_id"]

    def work() -> str:
        engine.retire(campaign_id, variant_id, tenant=who.tenant)
        return f"Retired {variant_id}."

    return await _act(request, who, work)


async def add_variants(request: Request, who: Principal, key: str) -> Response:
    """Add variants: given texts (one per line) serve at once; ``n`` generated await review."""
    engine = _state(request).engine
    campaign_id = request.path_params["campaign_id"]
    form = await _form(request)
    texts = [line.strip() for line in form.get("texts", "").splitlines() if line.strip()]
    n_text = form.get("n", "").strip()

    def work() -> str:
        if texts and n_text:
            raise InvalidRequest("variants", "give texts or a number to generate, not both")
        if texts:
            added = engine.add_variants(
                campaign_id, [{"text": t} for t in texts], tenant=who.tenant
            )
        elif n_text.isdigit() and int(n_text) > 0:
            added = engine.add_variants(campaign_id, n=int(n_text), tenant=who.tenant)
        else:
            raise InvalidRequest("variants", "write at least one text, or a number to generate")
        return f"Added {len(added)} variant{'s' if len(added) != 1 else ''}."

    return await _act(request, who, work)


# -- static files ----------------------------------------------------------------------------


async def static(request: Request) -> Response:
    """The stylesheet and the vendored htmx (only files of the package's static folder)."""
    name = request.path_params["name"]
    path = _STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", 404, media_type="text/plain")
    return Response(
        path.read_bytes(),
        media_type=_STATIC_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard's routes on ``app`` (after the API's, out of the OpenAPI document)."""
    campaign_path = "/ui/campaigns/{campaign_id}"
    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("GET", "/ui/login", login_form),
        ("POST", "/ui/login", login),
        ("POST", "/ui/logout", logout),
        ("GET", "/ui/static/{name}", static),
        ("GET", "/ui", _page(campaigns)),
        ("GET", "/ui/fragments/campaigns", _page(campaigns_fragment)),
        ("GET", "/ui/export/campaigns.csv", _page(campaigns_export)),
        ("GET", campaign_path, _page(campaign)),
        ("GET", f"{campaign_path}/live", _page(campaign_fragment)),
        ("GET", f"{campaign_path}/export/{{table}}.csv", _page(campaign_export)),
        ("POST", f"{campaign_path}/variants", _page(add_variants)),
        ("POST", f"{campaign_path}/variants/{{variant_id}}/retire", _page(retire)),
        ("POST", f"{campaign_path}/variants/{{variant_id}}/approve", _page(_review("approve"))),
        ("POST", f"{campaign_path}/variants/{{variant_id}}/reject", _page(_review("reject"))),
    ]
    for method, path, endpoint in routes:
        app.add_route(path, endpoint, methods=[method], include_in_schema=False)
