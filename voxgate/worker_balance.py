"""Spread a box's new connections over the ``serve --workers`` processes by their live streams.

The workers share one listening socket and the kernel hands each new connection to whichever waiting
worker it wakes: measured, 40 new connections to two idle workers split 27 / 13. A live stream stays on
the worker that accepted its connection for the whole call, and each worker's inference engine is one
thread, so the worker with more streams falls behind while the other has room.

So the workers compare notes on a :class:`LoadBoard` the supervisor shares with all of them (an anonymous
file, one slot per worker: its live streams and a heartbeat). A worker holding more than ``SLACK`` streams
over the least-loaded live worker stops accepting: its listening sockets leave its event loop
(:class:`AcceptGate`) until the others catch up. The least-loaded worker always accepts, so no new
connection waits for a gate; a worker whose heartbeat is older than ``STALE_S`` (dead, or restarting) is
left out. Requests on connections already open are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

SLOT = struct.Struct("<qd")  # live streams, heartbeat (time.monotonic(): one clock for the whole box)
TICK_S = 0.05  # how often a worker publishes its streams and decides whether to accept
STALE_S = 2.0  # a slot not refreshed for this long belongs to no live worker
SLACK = 1  # streams a worker may hold over the least-loaded one and still accept


class LoadBoard:
    """Each worker's live streams, in shared memory (``mmap`` of a file the supervisor opened)."""

    def __init__(self, fd: int, count: int) -> None:
        if count < 1:
            raise ValueError(f"a load board needs at least one slot, got {count}")
        self.fd = fd
        self.count = count
        self._map = mmap.mmap(fd, SLOT.size * count)

    @classmethod
    def create(cls, count: int) -> LoadBoard:
        """A new board (every slot empty) on an anonymous file the workers inherit by ``fd``."""
        fd, path = tempfile.mkstemp(prefix="voxgate-workers-")
        os.unlink(path)
        os.ftruncate(fd, SLOT.size * count)
        os.set_inheritable(fd, True)
        return cls(fd, count)

    def publish(self, index: int, streams: int) -> None:
        SLOT.pack_into(self._map, index * SLOT.size, streams, time.monotonic())

    def streams(self, now: float | None = None) -> list[int | None]:
        """Each slot's live streams; None for a slot without a live worker."""
        now = time.monotonic() if now is None else now
        loads: list[int | None] = []
        for index in range(self.count):
            streams, beat = SLOT.unpack_from(self._map, index * SLOT.size)
            loads.append(streams if beat > 0 and now - beat <= STALE_S else None)
        return loads

    def may_accept(self, index: int, slack: int = SLACK) -> bool:
        """Worker ``index`` holds at most ``slack`` streams over the least-loaded live worker."""
        loads = self.streams()
        mine = loads[index]
        others = [load for i, load in enumerate(loads) if i != index and load is not None]
        return mine is None or not others or mine <= min(others) + slack

    def close(self) -> None:
        self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class AcceptGate:
    """Takes the listening sockets of asyncio servers out of their event loop, and puts them back.

    asyncio has no public pause for a listening server; this uses the two private members its own
    ``Server.close`` and ``start_serving`` use (``_serving``, ``_start_serving``), on the standard
    selector event loop the server runs on. A paused server's sockets stay open and listening: the kernel
    hands their connections to the other workers.
    """

    def __init__(self, servers: Sequence[Any]) -> None:
        self._servers = list(servers)  # asyncio.Server (uvicorn.Server.servers)
        self.paused = False

    def pause(self) -> None:
        if self.paused:
            return
        for server in self._servers:
            loop: asyncio.AbstractEventLoop = server.get_loop()
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
            server._serving = False
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        for server in self._servers:
            if server.sockets:  # closed meanwhile (the server stops): nothing to put back
                server._start_serving()
        self.paused = False


async def balance(board: LoadBoard, index: int, gate: AcceptGate, streams: Callable[[], int]) -> None:
    """Publish this worker's streams and gate its accepting, every ``TICK_S``, until cancelled."""
    while True:
        try:
            board.publish(index, streams())
            if board.may_accept(index):
                gate.resume()
            else:
                gate.pause()
        except Exception:  # the balance is an optimisation: never stop serving for it
            log.exception("worker balance failed; accepting")
            gate.resume()
        await asyncio.sleep(TICK_S)
