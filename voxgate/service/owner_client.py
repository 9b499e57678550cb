"""A lean HTTP/1.1 client for the requests one node forwards to a stream's owner (verify, enroll, close).

Why not ``httpx`` for these: a forwarded verify poll crosses two busy event loops, and every ``await`` that
yields waits behind the loop's whole queue (a worker with 37 WebSocket streams has some 1,850 frames a second
on it). httpx and httpcore yield many times per request; this client yields once to write (only if the
socket's buffer is full) and once per read. Measured on two workers at 73 fastest-profile streams
(bench/README.md, "Scaling across workers"): httpx forwarded polls p50 13.9 / p99 151 ms against 4.3 / 60 ms
answered directly.

Small bodies only (the whole body is in memory) and plain ``http://`` owners: a node address with TLS, and
an HTTP stream's data (a streamed body), still go through httpx (:func:`voxgate.api.cluster.forward`). Messages are
framed by ``h11`` (chunked or sized answers, ``Connection: close``). A pooled connection found closed (before a
byte of the answer came) is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

import h11

READ_BYTES = 65536


class OwnerRequestFailed(Exception):
    """The owner could not be reached, or its answer broke off."""


@dataclass(frozen=True)
class OwnerAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framing: h11.Connection
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class OwnerClient:
    """Keep-alive connections to the owners, at most ``keep`` idle per owner, each dropped after
    ``keepalive_s`` idle (below the owner's own limit, so the owner never closes one under a request)."""

    def __init__(self, *, timeout_s: float, keepalive_s: float, keep: int = 32) -> None:
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.keep = keep
        self._idle: defaultdict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._swept = time.monotonic()

    async def request(
        self, method: str, host: str, port: int, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> OwnerAnswer:
        """The owner's answer; OwnerRequestFailed if there is none (refused, broken off or timed out)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                connection, reused = await self._connection(host, port)
                try:
                    return await self._exchange(connection, (host, port), method, target, headers, body)
                except _ClosedWhileIdle:
                    if not reused:
                        raise OwnerRequestFailed("the owner closed the connection without answering") from None
                connection, _ = await self._connection(host, port, fresh=True)
                return await self._exchange(connection, (host, port), method, target, headers, body)
        except TimeoutError:
            raise OwnerRequestFailed(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, h11.ProtocolError, _ClosedWhileIdle) as exc:
            raise OwnerRequestFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _sweep(self, now: float) -> None:
        """Close every expired idle connection (an owner that went away is never asked again)."""
        self._swept = now
        for owner, connections in list(self._idle.items()):
            kept = []
            for connection in connections:
                if now - connection.idle_since < self.keepalive_s:
                    kept.append(connection)
                else:
                    connection.close()
            if kept:
                self._idle[owner] = kept
            else:
                del self._idle[owner]

    async def _connection(self, host: str, port: int, *, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        if now - self._swept > self.keepalive_s:
            self._sweep(now)
        idle = self._idle[(host, port)]
        while idle and not fresh:
            connection = idle.pop()
            if now - connection.idle_since < self.keepalive_s and not connection.writer.is_closing():
                return connection, True
            connection.close()
        reader, writer = await asyncio.open_connection(host, port)
        return _Connection(reader, writer, h11.Connection(h11.CLIENT)), False

    async def _exchange(
        self,
        connection: _Connection,
        owner: tuple[str, int],
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> OwnerAnswer:
        framing = connection.framing
        host = f"{owner[0]}:{owner[1]}"
        sent = framing.send(
            h11.Request(
                method=method,
                target=target,
                headers=[("Host", host), ("Content-Length", str(len(body))), *headers],
            )
        )
        data = sent or b""
        if body:
            data += framing.send(h11.Data(data=body)) or b""
        data += framing.send(h11.EndOfMessage()) or b""
        try:
            try:
                connection.writer.write(data)
                await connection.writer.drain()
            except ConnectionError:
                raise _ClosedWhileIdle from None  # nothing of it reached the owner's application
            answer = await self._answer(connection)
        except BaseException:
            connection.close()
            raise
        if framing.our_state is h11.DONE and framing.their_state is h11.DONE:
            framing.start_next_cycle()
            connection.idle_since = time.monotonic()
            pool = self._idle[owner]
            if len(pool) < self.keep:
                pool.append(connection)
            else:
                connection.close()
        else:
            connection.close()
        return answer

    async def _answer(self, connection: _Connection) -> OwnerAnswer:
        framing = connection.framing
        status = 0
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        heard = False
        while True:
            event = framing.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await connection.reader.read(READ_BYTES)
                except ConnectionError:
                    if heard:
                        raise
                    data = b""
                if not data and not heard:
                    raise _ClosedWhileIdle
                heard = True
                framing.receive_data(data)  # b"" tells h11 the owner closed
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers]
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return OwnerAnswer(status, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise OwnerRequestFailed("the owner closed the connection mid-answer")


class _ClosedWhileIdle(Exception):
    """A pooled connection was found closed before any byte of the answer."""


