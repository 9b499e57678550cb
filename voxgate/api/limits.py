"""Request limits enforced before any route runs: a body limit per route, counted while the body is read
(never parsed past it), and paths with control characters refused.

Why here and not in the routes: a route's parser (JSON, multipart) reads the whole body before the route
sees it, so a 500 MB login body would be parsed in full. This ASGI middleware refuses a declared
``Content-Length`` above the limit without reading a byte, and stops a chunked body at the limit.

Why paths: Starlette matches routes with ``$``, which in Python also matches before a final newline, so
``/api/v2/maintenance/asp/%0A`` reached the list endpoint. No voxgate path holds a control character.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

OVERHEAD_BYTES = 1 << 20  # multipart boundaries, headers and form fields around an upload


class BodyTooLarge(BaseException):  # not an Exception: no parser on the way may swallow it
    """Raised inside ``receive`` when the body passes its limit; the middleware answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


Limits = Callable[[str, str], int | None]  # (method, path) -> most body bytes, or None: the route streams


class RequestLimits:
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            if scope["type"] == "http":
                await _answer(send, 404, "no such path: a path never holds control characters")
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope["method"], path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, f"the body is {declared} bytes; this endpoint takes at most {limit}")
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            log.warning("request body over its limit", extra={"path": path, "limit": exc.limit})
            if not started:
                await _answer(send, 413, f"the body passed {exc.limit} bytes, the most this endpoint takes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
