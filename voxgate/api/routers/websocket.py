"""The WebSocket door at ``/ws``: Voice Verify's WebSocket protocol, which is Twilio Media Streams' format.

One connection carries any number of streams (:mod:`voxgate.api.websocket.connection`; the messages are in
:mod:`voxgate.api.websocket.protocol`). The token is checked before the handshake is accepted, taken from
the first of:

- ``Authorization: Token <token>`` (as the REST API) or ``Authorization: Bearer <token>`` (SignalWire's
  ``authBearerToken``);
- a ``token`` query parameter, ``wss://host/ws?token=<token>``;
- the path, ``wss://host/ws/<token>``: Twilio drops the query string of a ``<Stream>`` url.

A missing or bad token gets HTTP 401 with a JSON ``detail`` on the upgrade (close code 1008 where the
server cannot answer with HTTP) and an ``error`` event, as a refused REST request does. ``/`` is served
too, so a client given Voice Verify's bare WebSocket host works unchanged on ``VOXGATE_WS_PORT``.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from voxgate.api.websocket.connection import Connection, WebSocketDoor
from voxgate.service.runtime import Runtime
from voxgate.store import accounts

log = logging.getLogger(__name__)

router = APIRouter()

DENIED_STATUS = 401  # the upgrade refused for want of a valid token
_TOKENS = re.compile(r"(/ws/)[^\s?\"]+|(token=)[^&\s\"]+")


class RedactTokens(logging.Filter):
    """uvicorn logs each WebSocket handshake with its path and query (``"WebSocket /ws/<token>" [accepted]``):
    the token is replaced before the line is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, str) for arg in record.args):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact(text: str) -> str:
    return _TOKENS.sub(lambda m: f"{m.group(1) or m.group(2)}<token>", text)


@router.websocket("/ws")
@router.websocket("/ws/{token}")
@router.websocket("/")
async def websocket_door(websocket: WebSocket) -> None:
    """Authenticate, accept, then serve the connection until the client leaves."""
    runtime: Runtime | None = getattr(websocket.app.state, "runtime", None)
    door: WebSocketDoor | None = getattr(websocket.app.state, "door", None)
    if runtime is None or door is None or not runtime.running:
        await websocket.close(code=1013, reason="voxgate is starting or stopping")
        return
    path = "/ws/{token}" if "token" in websocket.path_params else websocket.url.path  # never the token
    token = _token(websocket)
    user = None if token is None else await accounts.user_for_token(runtime.store.sessions, token)
    if token is None or user is None:
        detail = (
            "authentication credentials were not provided: send `Authorization: Token <token>`, "
            "`?token=<token>` or connect to /ws/<token>"
            if token is None
            else "invalid or expired token"
        )
        await door.record_error(DENIED_STATUS, detail, path=path)
        await _deny(websocket, detail)
        return
    await websocket.accept()
    client = websocket.client.host if websocket.client is not None else None
    log.info("WebSocket connected", extra={"user": user, "client": client})
    await Connection(websocket, runtime, door, path=path, token=token).run()


def _token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
    for candidate in (websocket.query_params.get("token"), websocket.path_params.get("token")):
        if candidate:
            return str(candidate)
    return None


async def _deny(websocket: WebSocket, detail: str) -> None:
    """Refuse the upgrade: HTTP 401 and a JSON detail where the server can send one, else close 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=DENIED_STATUS))
    else:
        await websocket.close(code=1008, reason=detail[:120])


def redact_server_logs() -> None:
    """Tokens may travel in WebSocket paths and queries: the server's own log lines never show them."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
