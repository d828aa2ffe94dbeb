"""The service's OpenAPI document, and the interactive docs served without internet.

The routes read and validate their bodies themselves (see :mod:`~adloop.optimizer.http_codec`),
so FastAPI cannot see the body models; :func:`route_doc` documents each route's body and its
error answers by hand, and :func:`install_openapi` puts the body models, with every model they
refer to, under ``#/components/schemas`` where those references resolve. Every error answer
is documented with the one body the service sends, :class:`~adloop.optimizer.http_models.ErrorBody`.

``/docs`` is Swagger UI and ``/redoc`` ReDoc, their scripts and styles served by the service
itself from the ``fastapi-offline`` package, so the pages work on a machine without internet.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.staticfiles import StaticFiles

from adloop.optimizer import http_models

__all__ = ["DOCS_ASSETS_PATH", "install_docs", "install_openapi", "route_doc"]

#: Where the docs pages' scripts and styles are served from.
DOCS_ASSETS_PATH = "/docs/assets"

#: The bodies routes read, and the error answer: documented as components.
_MODELS: tuple[type[BaseModel], ...] = (
    http_models.AddVariantsBody,
    http_models.ChooseBody,
    http_models.CreateCampaignBody,
    http_models.ErrorBody,
    http_models.EventsBody,
    http_models.KeyBody,
    http_models.ReviewBody,
)
_REF = "#/components/schemas/{model}"

#: What each error status means, for every route that can answer it.
_ERRORS: dict[int, str] = {
    400: "Malformed JSON, an empty body where one is required, or a request the engine "
    "refuses ('bad_request').",
    401: "Missing, unknown, revoked or expired API key ('unauthorized').",
    403: "The key lacks the right: only admin keys manage keys ('forbidden').",
    404: "No such campaign, variant or key for this tenant ('not_found').",
    408: "The client stopped sending the body it announced ('body_timeout'); the connection "
    "is closed.",
    409: "The campaign has no active variant, or a key id names several keys.",
    413: "The body is over the size limit ('body_too_large').",
    422: "A field is invalid; 'field' names it and 'details' lists up to 20 errors.",
    429: "Too many failed authentications from this client ('too_many_failures'); retry "
    "after the seconds in the Retry-After header.",
    503: "The store cannot take writes now ('storage_unavailable'); retry later.",
    507: "The disk holding the store is full ('storage_full'); retry once space is freed.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before failing to authenticate again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }
    if status == 429:
        answer["headers"] = _RETRY_AFTER
    return answer


def route_doc(
    *errors: int,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    secured: bool = True,
) -> dict[str, Any]:
    """``add_api_route`` keyword arguments documenting a route's body, key and errors.

    A secured route also answers 401 and 429; a route with a body also 400, 408 and 413.
    """
    statuses = set(errors)
    extra: dict[str, Any] = {}
    if secured:
        statuses |= {401, 429}
        extra["security"] = [{"ApiKey": []}]
    if body is not None:
        statuses |= {400, 408, 413, 422}
        extra["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=body.__name__)}}},
        }
    return {
        "responses": {status: _error(status) for status in sorted(statuses)},
        "openapi_extra": extra or None,
    }


def install_openapi(app: FastAPI) -> None:
    """Generate the schema with the bearer-key scheme and the body models as components.

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
            components = schema.setdefault("components", {})
            _, definitions = models_json_schema(
                [(model, "validation") for model in _MODELS], ref_template=_REF
            )
            components.setdefault("schemas", {}).update(definitions["$defs"])
            components["securitySchemes"] = {"ApiKey": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc`` with assets from ``fastapi-offline``.

    Build the application with ``docs_url=None, redoc_url=None`` so these replace FastAPI's
    pages, which load their scripts from a CDN.
    """
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")
    title = f"{app.title} - API docs"

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
