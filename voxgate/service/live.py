"""The live view of this process's streams: what the console's Live calls page watches.

A :class:`LiveFeed` listens to the stream registry (starts and stops wake its watchers at once) and keeps
the last streams that ended, with why, so a call that just hung up stays on screen with its final verdict.
Between starts and stops a watcher gets a fresh snapshot every ``interval_s``: net speech, backlog and
verdicts change with every frame, and a snapshot costs a walk over the running streams, no I/O.

In a cluster (or under ``serve --workers``) the running streams of the other nodes are listed too, as their
owners last published them (no timelines: those stay with the owner), and ended streams are this node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from voxgate.service.cluster import entry_of
from voxgate.service.shared import StreamEntry
from voxgate.streams import StreamRegistry, StreamSession
from voxgate.streams.session import VerdictMark

KEEP_ENDED = 20  # streams that ended, newest first, kept for the view


@dataclass(frozen=True)
class StreamView:
    """What a view shows of a stream, copied out of its session (the stream listing's entry and the verdict
    timeline): an ended stream's view does not keep the session and its audio buffers alive."""

    entry: StreamEntry
    verdicts: tuple[VerdictMark, ...]

    @classmethod
    def of(cls, session: StreamSession, node: str) -> StreamView:
        return cls(entry_of(session, node), tuple(session.verdicts))


@dataclass(frozen=True)
class EndedStream:
    stream: StreamView  # as it was when it ended
    reason: str  # closed, idle_timeout, no_audio, force_off, ...
    ended: datetime  # UTC


@dataclass(frozen=True)
class LiveSnapshot:
    running: list[StreamView]  # oldest first
    ended: list[EndedStream]  # newest first


class LiveFeed:
    """Snapshots of the registry's streams for watchers, woken early by starts and stops."""

    def __init__(
        self,
        registry: StreamRegistry,
        node: str,
        remote: Callable[[], Awaitable[list[StreamEntry]]] | None = None,
        keep_ended: int = KEEP_ENDED,
    ) -> None:
        """``remote``: the other nodes' live streams (a cluster's, or ``serve --workers``'), shown with
        this node's but without their timelines; None on one process."""
        self._registry = registry
        self._node = node
        self._remote = remote
        self._ended: deque[EndedStream] = deque(maxlen=keep_ended)
        self._changed = asyncio.Event()
        self._closed = False
        registry.listen(on_start=self._started, on_stop=self._stopped)

    def close(self) -> None:
        """End every watch now (the server is stopping: a server waits for open responses to finish)."""
        self._closed = True
        self._wake()

    async def _started(self, session: StreamSession) -> None:
        self._wake()

    async def _stopped(self, session: StreamSession, reason: str) -> None:
        self._ended.appendleft(EndedStream(StreamView.of(session, self._node), reason, datetime.now(UTC)))
        self._wake()

    def _wake(self) -> None:
        """Wake every watcher waiting now; later waits use a fresh event."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def snapshot(self) -> LiveSnapshot:
        running = [StreamView.of(s, self._node) for s in self._registry.all()]
        if self._remote is not None:
            running += [StreamView(entry, ()) for entry in await self._remote()]
            running.sort(key=lambda view: view.entry.started)
        return LiveSnapshot(running=running, ended=list(self._ended))

    async def watch(self, interval_s: float, duration_s: float) -> AsyncIterator[LiveSnapshot]:
        """A snapshot now, then one every ``interval_s`` or at once when a stream starts or stops, for
        ``duration_s`` or until :meth:`close` (a watcher reconnects: a bounded watch never holds a server's
        shutdown for long, and a closed feed none at all)."""
        deadline = time.monotonic() + duration_s
        while not self._closed:
            yield await self.snapshot()
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(interval_s, left))
