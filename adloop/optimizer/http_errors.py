"""How the HTTP service turns errors into JSON answers.

Every error is ``{"error": CODE, "message": TEXT, "field": "dotted.path" | null}`` (plus
``details`` for a body that failed validation). The optimizer's own errors map to statuses
here (not found -> 404, no active variants -> 409, ...); :class:`HTTPError` carries a status
and code chosen by the service itself (a body too large, malformed JSON, a missing key).

Storage faults are the server's, not the caller's: a full disk answers ``507``
(``storage_full``), any other storage failure (an I/O error, an invalidated database, a
stopped writer) ``503`` (``storage_unavailable``), both with ``Retry-After``; the message
names the cause. Nothing of the failed request was stored, and the service recovers by itself
once the cause is fixed. Any other unexpected error is a JSON ``500`` (``internal_error``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adloop.optimizer.errors import (
    AuthError,
    CampaignNotFound,
    HTTPError,
    InvalidRequest,
    NoActiveVariants,
    OptimizerError,
    ReviewConflict,
    VariantNotFound,
)
from adloop.storage import (
    StorageFullError,
    StorageUnavailableError,
    StoreClosedError,
    WriterStoppedError,
    storage_fault,
)

__all__ = ["error_response", "http_error_response", "install_error_handlers"]

_log = logging.getLogger("adloop.service")

#: Seconds a client is asked to wait before retrying after a storage fault.
RETRY_AFTER_SECONDS = 5


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer; ``details`` is left out when empty."""
    payload: dict[str, Any] = {"error": code, "message": message, "field": field}
    if details:
        payload["details"] = details
    return JSONResponse(payload, status_code=status, headers=headers)


def _challenge(status: int) -> dict[str, str] | None:
    # RFC 9110: a 401 names the scheme the client should authenticate with.
    return {"WWW-Authenticate": "Bearer"} if status == 401 else None


def http_error_response(exc: HTTPError) -> JSONResponse:
    """The answer to an :class:`HTTPError`, as the routes and the fast path give it."""
    headers = {**(_challenge(exc.status) or {}), **(exc.headers or {})}
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.details, headers)


async def _on_http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return http_error_response(exc)


async def _on_framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # No route matched (404) or it has no such method (405): the same JSON as every error.
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names the first matching route's methods only
        path = request.scope["path"]
        methods = {
            method
            for route in request.app.routes
            if getattr(route, "methods", None) and route.path_regex.match(path)
            for method in route.methods
        }
        headers = {"Allow": ", ".join(sorted(methods))}
    return error_response(exc.status_code, code, str(exc.detail), None, None, headers)


async def _on_parameter_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # A path or query parameter FastAPI validated (bodies are validated by the routes).
    errors = exc.errors()
    details = [
        {"field": ".".join(map(str, e["loc"])), "type": e["type"], "message": e["msg"]}
        for e in errors[:20]
    ]
    field = details[0]["field"] if details else None
    message = f"{field}: {errors[0]['msg']}" if errors else "invalid request"
    return error_response(422, "invalid_request", message, field, details)


async def _on_campaign_not_found(request: Request, exc: CampaignNotFound) -> JSONResponse:
    return error_response(404, "not_found", str(exc), "campaign_id")


async def _on_variant_not_found(request: Request, exc: VariantNotFound) -> JSONResponse:
    return error_response(404, "not_found", str(exc), "variant_id")


async def _on_no_active_variants(request: Request, exc: NoActiveVariants) -> JSONResponse:
    return error_response(409, "no_active_variants", str(exc), "campaign_id")


async def _on_review_conflict(request: Request, exc: ReviewConflict) -> JSONResponse:
    return error_response(409, "review_conflict", str(exc), "variant_id")


async def _on_invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
    return error_response(422, "invalid_request", str(exc), exc.field)


async def _on_auth_error(request: Request, exc: AuthError) -> JSONResponse:
    code = "unauthorized" if exc.status == 401 else "forbidden"
    return error_response(exc.status, code, str(exc), "authorization", None, _challenge(exc.status))


async def _on_optimizer_error(request: Request, exc: OptimizerError) -> JSONResponse:
    return error_response(400, "bad_request", str(exc))


async def _on_generator_error(request: Request, exc: Exception) -> JSONResponse:
    field = getattr(exc, "field", None)
    if field is None:
        return error_response(422, "generator_error", str(exc), "brief")
    path = field if field.startswith("brief") else f"brief.{field}"
    return error_response(422, "invalid_brief", str(exc), path)


def _storage_response(fault: StorageUnavailableError) -> JSONResponse:
    full = isinstance(fault, StorageFullError)
    return error_response(
        507 if full else 503,
        "storage_full" if full else "storage_unavailable",
        str(fault),
        None,
        None,
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _on_storage_fault(request: Request, exc: StorageUnavailableError) -> JSONResponse:
    return _storage_response(exc)


async def _on_writer_gone(request: Request, exc: Exception) -> JSONResponse:
    # The store is closed or its writer ended (shutting down): nothing can be written now.
    return _storage_response(StorageUnavailableError(str(exc)))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    fault = storage_fault(exc)  # e.g. a DuckDB error from a read on failing storage
    if fault is not None:
        _log.warning("storage fault on %s %s: %s", request.method, request.url.path, fault.cause)
        return _storage_response(fault)
    _log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "internal_error", f"the server failed: {type(exc).__name__}; see the server log"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer the optimizer's errors (and the generators', when installed) as JSON.

    Starlette picks the handler of the nearest class in the exception's MRO, so the specific
    errors win over the :class:`OptimizerError` catch-all.
    """
    app.add_exception_handler(HTTPError, _on_http_error)
    app.add_exception_handler(StarletteHTTPException, _on_framework_error)
    app.add_exception_handler(RequestValidationError, _on_parameter_error)
    app.add_exception_handler(CampaignNotFound, _on_campaign_not_found)
    app.add_exception_handler(VariantNotFound, _on_variant_not_found)
    app.add_exception_handler(NoActiveVariants, _on_no_active_variants)
    app.add_exception_handler(ReviewConflict, _on_review_conflict)
    app.add_exception_handler(InvalidRequest, _on_invalid_request)
    app.add_exception_handler(AuthError, _on_auth_error)
    app.add_exception_handler(OptimizerError, _on_optimizer_error)
    app.add_exception_handler(StorageUnavailableError, _on_storage_fault)
    app.add_exception_handler(WriterStoppedError, _on_writer_gone)
    app.add_exception_handler(StoreClosedError, _on_writer_gone)
    app.add_exception_handler(Exception, _on_unexpected)
    try:
        from adloop.generators import GeneratorError
    except ImportError:  # generators not installed: campaign creation reports it itself
        return
    app.add_exception_handler(GeneratorError, _on_generator_error)
