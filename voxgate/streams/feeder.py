"""One stream's way in from a live door (WebSocket, SIP): batches, a bounded queue, one feeding task.

::

    door ─ put (may wait) / offer (never waits) ─► BATCH_S batches ─► bounded queue ─► the feeder's
    task ─► StreamSession.feed (in order; up to MAX_FEED_S at once when it fell behind)

Why a feeder: ``StreamSession.feed`` may wait (the inference engine slows a stream whose analysis is
``max_backlog_s`` behind), and a door's reader must not wait with it, or one slow stream would hold up
everything else the reader carries. The feeder's own task does the feeding; the door only queues.

Backpressure, decided once for every door: the queue holds at most the stream's ``max_backlog_s``
(``VOXGATE_STREAM_MAX_BACKLOG_S``, the same limit at which the engine makes ``feed`` wait), so a stream
holds at most twice that between its door and VAD. When the queue is full:

- a door that can slow its sender (WebSocket: TCP) awaits room in :meth:`Feeder.put`; nothing is lost,
  and its ``waiting`` callback ticks every ``WAIT_TICK_S`` (the delay is voxgate's: the connection keeps
  its other streams from timing out meanwhile);
- a door that cannot (RTP arrives in real time; waiting would only grow a buffer) calls
  :meth:`Feeder.offer`, which drops the OLDEST queued audio to make room: the freshest audio is the
  caller's current voice. Dropping is counted, never silent: ``dropped_s`` on the feeder and on the
  session (listing, status), and one warning per stream.

A feed that fails is never swallowed: the feeder stops and calls ``on_failure(exc)`` (the door decides:
answer its client, close the stream). ``StreamNotFound`` (the stream was closed elsewhere, whoever closed
it told its client) only ends the feeder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import numpy as np

from voxgate.audio.types import FloatArray
from voxgate.streams.session import StreamNotFound

log = logging.getLogger(__name__)

BATCH_S = 0.25  # frames (20 ms) are gathered into batches this long before they leave the door
MAX_FEED_S = 2.0  # a feeder that fell behind hands up to this much over in one feed
WAIT_TICK_S = 0.5  # while put waits for room, its ``waiting`` callback is called this often


class FeedTarget(Protocol):
    """What a feeder needs of a stream (:class:`~voxgate.streams.session.StreamSession` is one)."""

    uuid: str
    sample_rate_hz: int
    max_backlog_s: float
    closed: bool
    dropped_s: float

    async def feed(self, samples: FloatArray) -> None: ...


StreamT = TypeVar("StreamT", bound=FeedTarget)


def _nothing() -> None:
    """A ``waiting`` callback that does nothing."""


class Feeder(Generic[StreamT]):
    """One stream's batches, queue and feeding task. One door calls it at a time, from the event loop."""

    def __init__(
        self,
        stream: StreamT,
        *,
        on_failure: Callable[[Exception], Awaitable[None]],
        name: str = "stream-feed",
    ) -> None:
        self.session = stream
        rate = stream.sample_rate_hz
        self.batch_samples = max(1, round(BATCH_S * rate))
        # the queue's room, at least one batch: a batch is never refused for being a batch
        self.max_queued_samples = max(self.batch_samples, round(stream.max_backlog_s * rate))
        self.max_feed_samples = max(self.batch_samples, round(MAX_FEED_S * rate))
        self.fed_samples = 0
        self.dropped_samples = 0
        self._on_failure = on_failure
        self._pending: list[FloatArray] = []  # samples short of a batch
        self._pending_samples = 0
        self._queue: deque[FloatArray] = deque()
        self._queued_samples = 0
        self._feeding = 0  # samples taken off the queue, being fed
        self._ending = False  # finish(): feed what is queued, then stop
        self._ended = False  # the task is over (or about to be): nothing more is taken
        self._ready = asyncio.Event()  # something was queued (or the end)
        self._room = asyncio.Event()  # the task took something off the queue (or ended)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{name}-{stream.uuid}")

    @property
    def uuid(self) -> str:
        return self.session.uuid

    @property
    def dropped_s(self) -> float:
        """Audio dropped by :meth:`offer` because the queue was full, seconds."""
        return self.dropped_samples / self.session.sample_rate_hz

    @property
    def fed_s(self) -> float:
        """Audio handed to the session, seconds."""
        return self.fed_samples / self.session.sample_rate_hz

    @property
    def queued_s(self) -> float:
        """Whole batches waiting for the feeder's task, seconds."""
        return self._queued_samples / self.session.sample_rate_hz

    @property
    def done(self) -> bool:
        """The task ended (finished, stream closed, failed or abandoned): further audio is discarded."""
        return self._ended or self._task.done()

    # -- audio in --------------------------------------------------------------------------------------

    async def put(self, samples: FloatArray, waiting: Callable[[], None] = _nothing) -> None:
        """Queue samples, waiting while the queue is full (calls ``waiting`` every ``WAIT_TICK_S``
        meanwhile). A door whose sender can be slowed: nothing is dropped."""
        for batch in self._batches(samples):
            if not await self._room_for(batch.size, waiting):
                return  # the feeder ended: it takes nothing more
            self._enqueue(batch)

    def offer(self, samples: FloatArray) -> None:
        """Queue samples without waiting: when the queue is full, the oldest queued audio is dropped
        (counted in ``dropped_s``). A door whose sender cannot be slowed (RTP)."""
        for batch in self._batches(samples):
            if self.done:
                return
            dropped = 0
            while self._queue and self._queued_samples + batch.size > self.max_queued_samples:
                old = self._queue.popleft()
                self._queued_samples -= old.size
                dropped += old.size
            if dropped:
                self._dropped(dropped)
            self._enqueue(batch)

    async def finish(self) -> None:
        """Hand over what is pending (waiting for room, dropping nothing) and wait until the session has
        been fed everything (or the feeder ended otherwise)."""
        if self._pending and not self.done:
            last = np.concatenate(self._pending)
            self._pending, self._pending_samples = [], 0
            if await self._room_for(last.size, _nothing):
                self._enqueue(last)
        self._ending = True
        self._ready.set()
        await asyncio.wait({self._task})

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Hand over what is pending and wait until everything queued so far reached the session; the
        feeder goes on. A bot's end-of-utterance message comes after the utterance's frames: this makes
        them part of the utterance."""
        if self._pending and not self.done:
            last = np.concatenate(self._pending)
            self._pending, self._pending_samples = [], 0
            if await self._room_for(last.size, _nothing):
                self._enqueue(last)
        target = self.fed_samples + self.dropped_samples + self._queued_samples + self._feeding
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.done and self.fed_samples + self.dropped_samples < target:
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.005)

    def abandon(self) -> None:
        """Stop now (the stream closed, or its door is gone): what is pending or queued is discarded."""
        self._pending, self._pending_samples = [], 0
        self._stop_taking()
        self._task.cancel()

    # -- inside ------------------------------------------------------------------------------------------

    def _batches(self, samples: FloatArray) -> list[FloatArray]:
        """Collect samples; returns the whole ``BATCH_S`` batches they complete, in order."""
        if samples.size == 0 or self.done:
            return []
        self._pending.append(samples)
        self._pending_samples += samples.size
        if self._pending_samples < self.batch_samples:
            return []
        audio = np.concatenate(self._pending)  # (samples,) float32: a copy, the door may reuse its arrays
        whole = audio.size - audio.size % self.batch_samples
        rest = audio[whole:]
        self._pending = [rest] if rest.size else []
        self._pending_samples = rest.size
        return [audio[i : i + self.batch_samples] for i in range(0, whole, self.batch_samples)]

    async def _room_for(self, n_samples: int, waiting: Callable[[], None]) -> bool:
        """Wait until ``n_samples`` fit in the queue; False when the feeder ended meanwhile."""
        while not self.done:
            if not self._queue or self._queued_samples + n_samples <= self.max_queued_samples:
                return True
            waiting()
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), WAIT_TICK_S)
        return False

    def _enqueue(self, batch: FloatArray) -> None:
        self._queue.append(batch)
        self._queued_samples += batch.size
        self._ready.set()

    def _dropped(self, n_samples: int) -> None:
        first = self.dropped_samples == 0
        self.dropped_samples += n_samples
        self.session.dropped_s += n_samples / self.session.sample_rate_hz
        if first:
            log.warning(
                "stream falls behind its door: oldest audio dropped (counted in dropped_s)",
                extra={"stream_uuid": self.uuid, "max_backlog_s": self.session.max_backlog_s},
            )

    async def _run(self) -> None:
        try:
            while True:
                while not self._queue and not self._ending:
                    self._ready.clear()
                    await self._ready.wait()
                if not self._queue:
                    return  # finished: everything was fed
                batches = [self._queue.popleft()]
                size = batches[0].size
                while self._queue and size < self.max_feed_samples:
                    batches.append(self._queue.popleft())
                    size += batches[-1].size
                self._queued_samples -= size
                self._feeding = size
                self._room.set()
                if self.session.closed:
                    return  # closed elsewhere: whoever closed it answers for it
                await self.session.feed(batches[0] if len(batches) == 1 else np.concatenate(batches))
                self.fed_samples += size
                self._feeding = 0
        except StreamNotFound:  # StreamClosed: closed elsewhere, and whoever closed it told the client
            return
        except Exception as exc:  # never silent: the door hears of it
            self._stop_taking()
            try:
                await self._on_failure(exc)
            except Exception:
                log.exception("handling a feed failure failed", extra={"stream_uuid": self.uuid})
        finally:
            self._stop_taking()

    def _stop_taking(self) -> None:
        self._ended = True
        self._queue.clear()
        self._queued_samples = 0
        self._room.set()  # a put waiting for room sees the feeder ended
