"""ASGI middleware that answers a plainly valid single ``choose`` ahead of FastAPI's router.

Routing, dependency solving and request objects cost about as much CPU as everything else
in a ``choose`` together, so the common case -- a known key, a small body the fast decoder
accepts, no ``n``, a live campaign -- is answered here with exactly the route's answer.
Every other request goes on to the documented route, which handles it in full, errors
included; a wrong key, or a client over its failure budget, is refused here with the
routes' own answer (401, 429). ``adloop_http_choose_fast_path_total{outcome=...}`` counts
``answered``, ``refused`` and ``handed_on``.
"""

from __future__ import annotations

import time
from functools import lru_cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adloop.optimizer.errors import HTTPError
from adloop.optimizer.http_auth import ServiceState, authenticate
from adloop.optimizer.http_codec import api_key_from, encode_plain, plain_choose
from adloop.optimizer.http_errors import http_error_response

__all__ = ["ChooseFastPath"]

#: Larger bodies are not plain single choices; the route reads them.
_MAX_FAST_BODY = 4096


def _replay(first: Message, receive: Receive) -> Receive:
    """An ASGI ``receive`` that gives ``first`` again, then carries on with ``receive``."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _choose_campaign(scope: Scope) -> str | None:
    """The campaign of a ``POST /v1/campaigns/{id}/choose``; None for any other request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")
    if len(parts) != 5 or parts[:3] != ["", "v1", "campaigns"] or parts[4] != "choose":
        return None
    return parts[3] or None


@lru_cache(maxsize=4096)
def _refusal(status: int, code: str, message: str, field: str, retry_after: str | None) -> tuple:
    """The ASGI messages of one refusal, built once: a flood repeats the same few answers."""
    response = http_error_response(
        HTTPError(
            status,
            code,
            message,
            field,
            headers={"Retry-After": retry_after} if retry_after else None,
        )
    )
    start = {"type": "http.response.start", "status": status, "headers": response.raw_headers}
    return start, {"type": "http.response.body", "body": response.body}


async def _send_refusal(send: Send, error: HTTPError) -> None:
    """Answer ``error`` (a 401 or 429 from :func:`authenticate`) as the routes would."""
    retry_after = (error.headers or {}).get("Retry-After")
    start, body = _refusal(error.status, error.code, error.message, error.field, retry_after)
    await send(start)
    await send(body)


class ChooseFastPath:
    """Answer a plainly valid ``POST /v1/campaigns/{id}/choose`` itself; pass on the rest.

    Parameters
    ----------
    app:
        The application behind: the request metrics, then FastAPI's exception handlers and
        router.
    state:
        The service's engine, key ring, failed-auth limiter and metrics. The caller's key is
        checked here exactly as the routes check it (:func:`~adloop.optimizer.http_auth.
        authenticate`), so a wrong key or a client over its failure budget is refused (401,
        429) before the router: a flood of wrong keys costs little.
    metrics (``state.metrics``):
        Counts ``answered`` and ``handed_on`` choose requests, and counts and times the
        answered ones under the route's template ``route_path``, as the request metrics
        behind would have.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServiceState,
        route_path: str,
    ) -> None:
        self.app = app
        self.state = state
        self.chooser = state.chooser
        self.metrics = state.metrics
        self.route_path = route_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        campaign_id = _choose_campaign(scope)
        if campaign_id is not None:
            start = time.perf_counter()
            replay, status = await self._answer(scope, campaign_id, receive, send)
            if replay is None:
                if status == 200:
                    self.metrics.observe_request(self.route_path, 200, time.perf_counter() - start)
                    self.metrics.choose_fast_path.answered += 1
                else:  # counted here and by reason in adloop_auth_failures_total, cheaply
                    self.metrics.choose_fast_path.refused += 1
                return
            self.metrics.choose_fast_path.handed_on += 1
            receive = replay
        await self.app(scope, receive, send)

    async def _answer(
        self, scope: Scope, campaign_id: str, receive: Receive, send: Send
    ) -> tuple[Receive | None, int]:
        """``(None, status)`` once answered; else a ``receive`` replaying what was read."""
        authorization = x_api_key = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                x_api_key = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        key = api_key_from(authorization, x_api_key)
        if not key:  # the route says what is missing
            return receive, 0
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            who = await authenticate(self.state, key, client)
        except HTTPError as error:
            await _send_refusal(send, error)
            return None, error.status
        if length is None or not length.isdigit() or int(length) > _MAX_FAST_BODY:
            return receive, 0
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # e.g. the client left: the route sees it
                return _replay(message, receive), 0
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        plain = plain_choose(body)
        if plain is not None and plain.n is None:
            try:
                choice = self.chooser.choose(
                    campaign_id,
                    segment=plain.segment,
                    request_id=plain.request_id,
                    tenant=who.tenant,
                )
            except Exception:  # noqa: BLE001 - the route raises it again and answers properly
                pass
            else:
                payload = encode_plain(choice.to_dict())
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
                return None, 200
        return _replay({"type": "http.request", "body": body, "more_body": False}, receive), 0
