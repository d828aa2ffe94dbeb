"""How the HTTP service turns errors into JSON answers.

Every error is ``{"error": CODE, "message": TEXT, "field": "dotted.path" | null}`` (plus
``details`` for a body that failed validation). The optimizer's own errors map to statuses
here (not found -> 404, no active variants -> 409, ...); :class:`HTTPError` carries a status
and code chosen by the service itself (a body too large, malformed JSON, a missing key).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from adloop.optimizer.errors import (
    AuthError,
    CampaignNotFound,
    InvalidRequest,
    NoActiveVariants,
    OptimizerError,
    VariantNotFound,
)

__all__ = ["HTTPError", "error_response", "install_error_handlers"]


class HTTPError(OptimizerError):
    """A request the service rejects with a given HTTP status, error code and field.

    Raised by request decoding and the routes only; the handler installed by
    :func:`install_error_handlers` answers it, so it never escapes the application.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details


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


async def _on_http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return error_response(
        exc.status, exc.code, exc.message, exc.field, exc.details, _challenge(exc.status)
    )


async def _on_campaign_not_found(request: Request, exc: CampaignNotFound) -> JSONResponse:
    return error_response(404, "not_found", str(exc), "campaign_id")


async def _on_variant_not_found(request: Request, exc: VariantNotFound) -> JSONResponse:
    return error_response(404, "not_found", str(exc), "variant_id")


async def _on_no_active_variants(request: Request, exc: NoActiveVariants) -> JSONResponse:
    return error_response(409, "no_active_variants", str(exc), "campaign_id")


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


def install_error_handlers(app: FastAPI) -> None:
    """Answer the optimizer's errors (and the generators', when installed) as JSON.

    Starlette picks the handler of the nearest class in the exception's MRO, so the specific
    errors win over the :class:`OptimizerError` catch-all.
    """
    app.add_exception_handler(HTTPError, _on_http_error)
    app.add_exception_handler(CampaignNotFound, _on_campaign_not_found)
    app.add_exception_handler(VariantNotFound, _on_variant_not_found)
    app.add_exception_handler(NoActiveVariants, _on_no_active_variants)
    app.add_exception_handler(InvalidRequest, _on_invalid_request)
    app.add_exception_handler(AuthError, _on_auth_error)
    app.add_exception_handler(OptimizerError, _on_optimizer_error)
    try:
        from adloop.generators import GeneratorError
    except ImportError:  # generators not installed: campaign creation reports it itself
        return
    app.add_exception_handler(GeneratorError, _on_generator_error)
