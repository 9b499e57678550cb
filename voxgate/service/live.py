"""The live view of this process's streams: what the console's Live calls page watches.

A :class:`LiveFeed` listens to the stream registry (starts and stops wake its watchers at once) and keeps
the last streams that ended, with why, so a call that just hung up stays on screen with its final verdict.
Between starts and stops a watcher gets a fresh snapshot every ``interval_s``: net speech, backlog and
verdicts change with every frame, and a snapshot costs a walk over the running streams, no I/O.

It holds only this process's streams: in a cluster every node shows its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from voxgate.streams import StreamRegistry, StreamSession, StreamType
from voxgate.streams.session import InfoValue, VerdictMark

KEEP_ENDED = 20  # streams that ended, newest first, kept for the view


@dataclass(frozen=True)
class StreamView:
    """What a view shows of a stream, copied out of its session: an ended stream's view does not keep the
    session (and its audio buffers) alive."""

    uuid: str
    type: StreamType
    info: dict[str, InfoValue]
    started: datetime
    sample_rate_hz: int
    duration_s: float
    speech_s: float
    heard_speech_s: float
    backlog_s: float
    capped: bool
    dropped_s: float
    last_verdict: str | None
    last_score: float | None
    verdicts: tuple[VerdictMark, ...]

    @classmethod
    def of(cls, session: StreamSession) -> StreamView:
        return cls(
            uuid=session.uuid,
            type=session.type,
            info=dict(session.info),
            started=session.started,
            sample_rate_hz=session.sample_rate_hz,
            duration_s=session.duration_s,
            speech_s=session.speech_s,
            heard_speech_s=session.heard_speech_s,
            backlog_s=session.backlog_s,
            capped=session.capped,
            dropped_s=session.dropped_s,
            last_verdict=session.last_verdict,
            last_score=session.last_score,
            verdicts=tuple(session.verdicts),
        )


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

    def __init__(self, registry: StreamRegistry, keep_ended: int = KEEP_ENDED) -> None:
        self._registry = registry
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
        self._ended.appendleft(EndedStream(StreamView.of(session), reason, datetime.now(UTC)))
        self._wake()

    def _wake(self) -> None:
        """Wake every watcher waiting now; later waits use a fresh event."""
        self._changed.set()
        self._changed = asyncio.Event()

    def snapshot(self) -> LiveSnapshot:
        return LiveSnapshot(running=[StreamView.of(s) for s in self._registry.all()], ended=list(self._ended))

    async def watch(self, interval_s: float, duration_s: float) -> AsyncIterator[LiveSnapshot]:
        """A snapshot now, then one every ``interval_s`` or at once when a stream starts or stops, for
        ``duration_s`` or until :meth:`close` (a watcher reconnects: a bounded watch never holds a server's
        shutdown for long, and a closed feed none at all)."""
        deadline = time.monotonic() + duration_s
        while not self._closed:
            yield self.snapshot()
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(interval_s, left))
