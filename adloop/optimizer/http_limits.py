"""Limits that keep slow clients from holding the service: a body deadline and a connection cap.

* :class:`BodyReadTimeout`: a request must deliver the body it announced within
  :data:`BODY_TIMEOUT_SECONDS` of its headers; a client that stops sending is answered
  ``408`` (``{"error": "body_timeout", ...}``) and its connection closed. uvicorn itself has
  no such deadline: without one, a client declaring ``Content-Length`` and sending nothing
  holds its connection (and a request task) forever.
* a connection cap: ``adloop serve --max-connections`` (default 1000) is uvicorn's
  ``limit_concurrency``; past it, new requests are answered ``503`` at once instead of
  piling up.

Not covered here: a client that never finishes sending its *headers* never reaches the
application. The connection cap bounds what such clients can hold; in front of the Internet,
put a reverse proxy with a header timeout (e.g. nginx ``client_header_timeout``) ahead.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adloop.optimizer.errors import ConfigError, HTTPError
from adloop.optimizer.http_errors import error_response

__all__ = ["BODY_TIMEOUT_SECONDS", "BodyReadTimeout"]

#: Seconds a request may take to deliver its body, counted from its headers.
BODY_TIMEOUT_SECONDS = 10.0


class BodyReadTimeout:
    """ASGI middleware: 408 and close the connection when a body is not in within ``seconds``.

    The deadline covers the body only: once the last chunk has arrived, later ``receive``
    calls (waiting for a disconnect) are passed through untouched.

    Parameters
    ----------
    app:
        The application behind (outermost middleware goes here, so every body read is
        covered, the fast path's included).
    seconds:
        How long, from the request's headers, the whole body may take.
    """

    def __init__(self, app: ASGIApp, *, seconds: float = BODY_TIMEOUT_SECONDS) -> None:
        if not seconds > 0:
            raise ConfigError("seconds", f"must be > 0 seconds, got {seconds!r}")
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = timed_out = started = False

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise HTTPError(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.seconds:g} s",
                    "body",
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out:  # the rest of the body may still come: never read it
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"connection", b"close")],
                    }
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_closing)
        except HTTPError as exc:
            if not timed_out or started:
                raise
            # Raised ahead of the exception handlers (e.g. by the choose fast path).
            response = error_response(
                exc.status, exc.code, exc.message, exc.field, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
