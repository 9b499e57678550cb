"""The web console's files, served at ``/console/`` by the app itself (same port, same token login).

Plain HTML, CSS and ES modules in ``static/``: no build step, nothing fetched from another site. The
console is a client of the REST API like any other; the only endpoints made for it are the live stream
feed (``GET /api/v2/streams/live``) and the voiceprint listing (``GET /api/v2/voiceprints``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).with_name("static")
PATH = "/console"

# Scripts, styles, fetches and WebSockets from this origin only: an injected <script> or a link to a
# foreign site cannot run or leak the token. `ws:`/`wss:` because 'self' does not cover WebSockets in
# every browser.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag): an upgraded server serves its own console
]


class ConsoleFiles(StaticFiles):
    """Starlette's static files with the console's security headers on every answer."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)
