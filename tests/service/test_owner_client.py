"""The lean forwarding client against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvicorn
from starlette.types import Receive, Scope, Send

from voxgate.service.owner_client import OwnerClient, OwnerRequestFailed


class Owner:
    """An ASGI app that answers with what it was sent and which client port sent it."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.ports.append(scope["client"][1])
        answer = json.dumps(
            {"path": scope["path"], "query": scope["query_string"].decode(), "body": body.decode(),
             "auth": dict(scope["headers"]).get(b"authorization", b"").decode()}
        ).encode()
        if scope["path"] == "/chunked":  # no Content-Length: uvicorn sends it chunked
            await send({"type": "http.response.start", "status": 207, "headers": [(b"x-owner", b"yes")]})
            for i in range(0, len(answer), 7):
                await send({"type": "http.response.body", "body": answer[i : i + 7], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


@pytest_asyncio.fixture
async def owner() -> AsyncIterator[tuple[Owner, int]]:
    app = Owner()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", timeout_keep_alive=1)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield app, port
    server.should_exit = True
    await task


@pytest.mark.asyncio
async def test_answers_come_back_whole_on_one_kept_connection(owner: tuple[Owner, int]) -> None:
    app, port = owner
    client = OwnerClient(timeout_s=5, keepalive_s=0.5)
    try:
        for i in range(3):
            answer = await client.request(
                "POST", "127.0.0.1", port, f"/api/v2/verify?n={i}", [("Authorization", "Token t")], b'{"a": 1}'
            )
            assert answer.status == 200
            assert json.loads(answer.body) == {"path": "/api/v2/verify", "query": f"n={i}", "body": '{"a": 1}', "auth": "Token t"}
        chunked = await client.request("DELETE", "127.0.0.1", port, "/chunked", [], b"")
        assert chunked.status == 207 and ("x-owner", "yes") in chunked.headers
        assert json.loads(chunked.body)["path"] == "/chunked"
        assert len(set(app.ports)) == 1, "one keep-alive connection served every request"
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_kept_connection_the_owner_closed_is_replaced_unseen(owner: tuple[Owner, int]) -> None:
    app, port = owner
    client = OwnerClient(timeout_s=5, keepalive_s=30)  # longer than the owner keeps it (1 s): a stale one
    try:
        await client.request("POST", "127.0.0.1", port, "/first", [], b"1")
        await asyncio.sleep(1.6)  # the owner closes the idle connection
        answer = await client.request("POST", "127.0.0.1", port, "/second", [], b"2")
        assert answer.status == 200 and json.loads(answer.body)["body"] == "2"
        assert len(set(app.ports)) == 2, "the second request went on a new connection"
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_an_owner_that_does_not_listen_is_a_failure_not_a_hang() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        client = OwnerClient(timeout_s=5, keepalive_s=1)
        with pytest.raises(OwnerRequestFailed):
            await client.request("POST", "127.0.0.1", port, "/x", [], b"")


@pytest.mark.asyncio
async def test_idle_connections_to_an_owner_never_asked_again_are_closed(owner: tuple[Owner, int]) -> None:
    _, port = owner
    client = OwnerClient(timeout_s=5, keepalive_s=0.2)
    try:
        await client.request("POST", "127.0.0.1", port, "/a", [], b"")
        (kept,) = client._idle[("127.0.0.1", port)]
        await asyncio.sleep(0.3)
        with pytest.raises(OwnerRequestFailed):  # any request later sweeps the expired connection
            await client.request("POST", "127.0.0.1", 1, "/b", [], b"")
        assert kept.writer.is_closing() and ("127.0.0.1", port) not in client._idle
    finally:
        await client.aclose()
