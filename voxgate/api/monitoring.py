"""HTTP request metrics: an ASGI middleware that counts every request by method, route template and status
and times it (``voxgate_http_requests_total``, ``voxgate_http_request_duration_seconds``).

The route is the template (``/api/v2/stream/HTTP/data/{uuid}``), never the raw path: a path holds stream
uuids and external ids, and each would be a series of its own. A request refused before routing (a body
over its limit, a path with control characters) is matched against the routes here; one that matches none
is ``unmatched``. WebSocket connections are streams, counted by ``voxgate_streams``, not here.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxgate.service import metrics

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope) -> str:
    """The template of the route that handled (or would handle) the request; ``unmatched`` for none."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")  # not routed: refused before routing, or no route
    if app is None:
        return UNMATCHED
    table = _TABLES.get(app)
    if table is None:
        table = _TABLES[app] = list(_templates(getattr(getattr(app, "router", None), "routes", ())))
    raw = scope["path"]
    return next((template for regex, template in table if regex.match(raw)), UNMATCHED)


_TABLES: weakref.WeakKeyDictionary[Any, list[tuple[re.Pattern[str], str]]] = weakref.WeakKeyDictionary()


def _templates(routes: Iterable[Any]) -> Iterator[tuple[re.Pattern[str], str]]:
    """(regex, template) of every route, in routing order, through included routers and mounts."""
    for route in routes:
        regex, template = getattr(route, "path_regex", None), getattr(route, "path", None)
        if isinstance(regex, re.Pattern) and isinstance(template, str):
            yield regex, template
        inner = getattr(getattr(route, "original_router", None), "routes", None)  # FastAPI's included router
        if inner is None:
            inner = getattr(route, "routes", None)  # a Mount's
        if inner:
            yield from _templates(inner)


class RequestMetrics:
    """Outside the request limits, so requests they refuse are counted too (inside the path aliases, so
    an alias counts as its original)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer starts becomes Starlette's 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.http_request(method, route_of(scope), status, time.perf_counter() - started)
