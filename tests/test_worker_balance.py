"""The workers' load board and accept gate (voxgate.worker_balance), on a real loopback server."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from voxgate.worker_balance import STALE_S, AcceptGate, LoadBoard


def test_the_worker_with_more_than_its_share_stops_accepting() -> None:
    board = LoadBoard.create(3)
    try:
        assert board.streams() == [None, None, None], "no worker has published yet"
        assert board.may_accept(0), "alone, a worker always accepts"
        board.publish(0, 5)
        board.publish(1, 3)
        board.publish(2, 4)
        assert board.streams() == [5, 3, 4]
        assert not board.may_accept(0), "5 streams against the least loaded worker's 3"
        assert board.may_accept(1) and board.may_accept(2), "within one stream of the least loaded"
        assert board.streams(now=time.monotonic() + STALE_S + 1) == [None, None, None]
        seen_by_another = LoadBoard(board.fd, 3)  # what a worker that inherited the descriptor sees
        assert seen_by_another.streams() == [5, 3, 4]
    finally:
        board.close()


@pytest.mark.asyncio
async def test_a_paused_gate_leaves_connections_to_others() -> None:
    accepted: list[float] = []

    class Count(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(time.monotonic())
            transport.close()

    server = await asyncio.get_running_loop().create_server(Count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gate = AcceptGate([server])

    async def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            await asyncio.sleep(0.1)

    try:
        await connect()
        assert len(accepted) == 1
        gate.pause()
        await connect()  # the kernel completes the handshake into the backlog; nobody accepts it
        assert len(accepted) == 1, "a paused worker accepts nothing"
        gate.resume()
        await asyncio.sleep(0.1)
        assert len(accepted) == 2, "resumed, it takes what waited in the backlog"
    finally:
        server.close()
        await server.wait_closed()
