"""ASGI middleware that answers a plainly valid single ``choose`` ahead of FastAPI's router.

Routing, dependency solving and request objects cost about as much CPU as everything else
in a ``choose`` together, so the common case -- a known key, a small body the fast decoder
accepts, no ``n``, a live campaign -- is answered here with exactly the route's answer.
Every other request goes on to the documented route, which handles it in full, errors
included. ``adloop_http_choose_fast_path_total{outcome="answered"|"handed_on"}`` counts both.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adloop.optimizer.auth import KeyRing
from adloop.optimizer.engine import Engine
from adloop.optimizer.errors import OptimizerError
from adloop.optimizer.http_codec import api_key_from, encode_plain, plain_choose
from adloop.optimizer.http_metrics import ServiceMetrics

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


class ChooseFastPath:
    """Answer a plainly valid ``POST /v1/campaigns/{id}/choose`` itself; pass on the rest.

    Parameters
    ----------
    app:
        The application behind: the request metrics, then FastAPI's exception handlers and
        router.
    engine, keys:
        The engine that chooses and the key ring that knows the caller. A key valid when last
        checked is checked again here once its answer is a second old; a key never seen
        valid goes to the route, which looks it up (or refuses it, rate-limited).
    metrics:
        Counts ``answered`` and ``handed_on`` choose requests, and counts and times the
        answered ones under the route's template ``route_path``, as the request metrics
        behind would have.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Engine,
        keys: KeyRing,
        metrics: ServiceMetrics,
        route_path: str,
    ) -> None:
        self.app = app
        self.engine = engine
        self.keys = keys
        self.metrics = metrics
        self.route_path = route_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        campaign_id = _choose_campaign(scope)
        if campaign_id is not None:
            start = time.perf_counter()
            replay = await self._answer(scope, campaign_id, receive, send)
            if replay is None:
                self.metrics.observe_request(self.route_path, 200, time.perf_counter() - start)
                self.metrics.choose_fast_path.answered += 1
                return
            self.metrics.choose_fast_path.handed_on += 1
            receive = replay
        await self.app(scope, receive, send)

    async def _answer(
        self, scope: Scope, campaign_id: str, receive: Receive, send: Send
    ) -> Receive | None:
        """None once the request is answered; else a ``receive`` replaying what was read."""
        authorization = x_api_key = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                x_api_key = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        key = api_key_from(authorization, x_api_key)
        who = self.keys.cached(key) if key else None
        if who is None and key and self.keys.recognizes(key):
            # Valid when last checked, more than a second ago: check again (revoked? expired?)
            who = await run_in_threadpool(self.keys.authenticate, key)
        if who is None or length is None or not length.isdigit() or int(length) > _MAX_FAST_BODY:
            return receive
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # e.g. the client left: the route sees it
                return _replay(message, receive)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        plain = plain_choose(body)
        if plain is not None and plain.n is None:
            try:
                choice = self.engine.choose(
                    campaign_id,
                    segment=plain.segment,
                    request_id=plain.request_id,
                    tenant=who.tenant,
                )
            except OptimizerError:  # the route raises it again and answers with the error
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
                return None
        return _replay({"type": "http.request", "body": body, "more_body": False}, receive)
