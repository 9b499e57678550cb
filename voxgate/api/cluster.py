"""The web side of a cluster: a stream's requests reach its owner, and every answer names its node.

- :class:`NodeHeader` adds ``X-Voxgate-Node`` (the node that answered; for a forwarded request, the
  stream's owner) to every HTTP answer, so a proxy or an operator sees where a stream lives. The answer that
  opens an HTTP stream also carries ``X-Voxgate-Stream`` (its uuid): HAProxy can stick the uuid to the node.
- :func:`forward`: a request for a stream that runs on another node (data, close, verify, enroll) is sent
  on to the owner's internal address (``VOXGATE_NODE_URL``) with the caller's token, and its answer is
  returned as it came, with ``X-Voxgate-Forwarded-By`` naming the node that forwarded it (an operator, or a
  benchmark, can tell forwarded answers apart). A forwarded request carries ``X-Voxgate-Forwarded`` and is
  never forwarded again.
  Why forwarding rather than reading a published voiceprint: docs/scale-out.md, "Shared live state".
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator

import httpx
from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxgate.service.cluster import OwnerUnreachable
from voxgate.service.owner_client import OwnerRequestFailed
from voxgate.service.runtime import Runtime
from voxgate.streams import StreamNotFound, StreamSession, StreamType
from voxgate.streams.registry import parse_uuid

log = logging.getLogger(__name__)

NODE_HEADER = "X-Voxgate-Node"
STREAM_HEADER = "X-Voxgate-Stream"
FORWARDED_HEADER = "X-Voxgate-Forwarded"
FORWARDED_BY_HEADER = "X-Voxgate-Forwarded-By"
PASSED_ON = frozenset({"authorization", "content-type"})  # request headers the owner needs
PASSED_BACK = frozenset(
    {"content-type", "retry-after", NODE_HEADER.lower()}
)  # answer headers the caller needs


class NodeHeader:
    """Adds ``X-Voxgate-Node: <node id>`` to every HTTP answer that does not carry one (from an owner)."""

    def __init__(self, app: ASGIApp, node_id: str) -> None:
        self.app = app
        self.header = (NODE_HEADER.lower().encode(), node_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(name.lower() != self.header[0] for name, _ in headers):
                    headers.append(self.header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, named)


async def here_or_owner(
    runtime: Runtime,
    request: Request,
    stream_uuid: str,
    type: StreamType | None = None,
    *,
    content: AsyncIterator[bytes] | None = None,
) -> StreamSession | Response:
    """The live stream if it runs here; else the owner's answer to this request (``content``: the body to
    send on, default the request's body as read); StreamNotFound if no node runs it."""
    try:
        return runtime.streams.get(stream_uuid, type)
    except StreamNotFound:
        owners = await forward(
            runtime, request, stream_uuid, content if content is not None else await request.body()
        )
        if owners is None:
            raise
        return owners


async def forward(
    runtime: Runtime, request: Request, stream_uuid: str, content: bytes | AsyncIterator[bytes]
) -> Response | None:
    """The owner's answer when ``stream_uuid`` runs on another live node; None when it is not known
    elsewhere (the caller answers as for any unknown stream) or this request was forwarded already."""
    cluster = runtime.cluster
    client = cluster.client if cluster is not None else None
    if cluster is None or client is None or FORWARDED_HEADER.lower() in request.headers:
        return None
    try:
        key = parse_uuid(stream_uuid)
    except ValueError:
        return None
    owner = await cluster.owner(key)
    if owner is None:
        return None
    headers = {name: value for name, value in request.headers.items() if name.lower() in PASSED_ON}
    headers[FORWARDED_HEADER] = runtime.node_id
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    address = urllib.parse.urlsplit(owner.url)
    try:
        if cluster.owners is not None and isinstance(content, bytes) and address.scheme == "http":
            answer = await cluster.owners.request(
                request.method,
                address.hostname or "",
                address.port or 80,
                address.path.rstrip("/") + target,
                list(headers.items()),
                content,
            )
            status, answered, body = answer.status, answer.headers, answer.body
        else:  # TLS to the owner, or a streamed body (an HTTP stream's data)
            reply = await client.request(request.method, owner.url + target, content=content, headers=headers)
            status, answered, body = reply.status_code, list(reply.headers.items()), reply.content
    except (httpx.HTTPError, OwnerRequestFailed) as exc:
        cluster.forget_owner(key)
        log.warning("forwarding to a stream's owner failed", extra={"stream_uuid": key, "node": owner.node})
        raise OwnerUnreachable(
            f"stream {key} runs on node {owner.node}, which did not answer ({type(exc).__name__}); retry"
        ) from exc
    passed = {name: value for name, value in answered if name.lower() in PASSED_BACK}
    passed[FORWARDED_BY_HEADER] = runtime.node_id
    return Response(body, status_code=status, headers=passed)
