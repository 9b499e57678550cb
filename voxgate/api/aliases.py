"""The paths Voice Verify's integration guide writes without the ``/api/v2`` prefix, served as aliases.

The 1.5.1 guide (and the 1.7.6 one, once) writes most endpoints as ``POST /import``, ``GET /lock``,
``POST /pbx/{ID}/start``... while the API itself, and voxgate, serve them under ``/api/v2``. An
integrator who copies the guide's paths must reach the same endpoint. Each alias is its original's path
without the prefix, and this ASGI middleware, the outermost, rewrites it to the original before anything
else sees the request. So there is no second handler to drift: the token check, maintenance mode, the
body limit of the original (an import's, not the 1 MiB of a JSON request), its metrics (the original
route template) and its error events are the original's. Aliases stay out of the OpenAPI document,
where each endpoint is listed once, under the path the API defines.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/api/v2"

# Every path the guides write without the prefix, as they write it (parameters named as voxgate's
# routes name them). The original of each is PREFIX + alias; a test checks each original is served.
ALIASES: tuple[str, ...] = (
    "/enroll",
    "/verify",
    "/import",
    "/voiceprint",
    "/leave",
    "/streams",
    "/snapshot/generate",
    "/snapshot/import",
    "/lock",
    "/logging_aggregate",
    "/maintenance/unlock",
    "/maintenance/force_off",
    "/maintenance/loadbackup",
    "/maintenance/reset_password",
    "/maintenance/load_asp/{name}/",
    "/pbx/",
    "/pbx/{pbx_id}",
    "/pbx/{pbx_id}/start",
    "/pbx/{pbx_id}/stop",
)


def _pattern(templates: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for every alias: a ``{parameter}`` is one path segment, as in a route."""
    parts = (re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) for template in templates)
    return re.compile("|".join(parts))


_ALIAS = _pattern(ALIASES)


class PathAliases:
    """Rewrites an alias path to its original (``/lock`` -> ``/api/v2/lock``); everything else passes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _ALIAS.fullmatch(scope["path"]):
            scope = dict(scope, path=PREFIX + scope["path"])  # voxgate sets no root_path
            if isinstance(scope.get("raw_path"), bytes):
                scope["raw_path"] = PREFIX.encode() + scope["raw_path"]
        await self.app(scope, receive, send)
