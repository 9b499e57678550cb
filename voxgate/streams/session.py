"""One live stream: PCM in at its native rate, an incremental voiceprint out.

Every door (HTTP, WebSocket, SIP) ends here (DESIGN.md, "one engine, many doors"). The session is the
door-facing side of a stream (identity, timing, closing, feeding); its analysis — resampling, VAD,
the speech gate, the chunk embeddings pooled into the voiceprint — is a
:class:`~voxgate.streams.stages.SpeechPipeline`. ``voiceprint()`` normalises the pipeline's sums: a
verify poll costs a dot product, and a forward pass only when :meth:`StreamSession.settle` finds a new
settled tail.

A server's session does not know the inference engine: it is given a
:data:`~voxgate.streams.stages.Submit` callable (the registry wires ``InferenceEngine.submit``) and a
:class:`~voxgate.streams.stages.Settle` one (``InferenceEngine.settle``), so the engine works on the
pipeline alone and the two modules never import each other. A reader that needs the voiceprint now
(verify, enroll) first awaits :meth:`StreamSession.settle`: the settled tail (speech after which the
speaker paused, short of a whole chunk) is embedded then, once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from voxgate.audio.frames import FrameBuffer
from voxgate.audio.types import FloatArray
from voxgate.biometrics.voiceprint import Voiceprint
from voxgate.errors import VoxgateError
from voxgate.streams.stages import (
    CHUNK_S,
    MAX_BACKLOG_S,
    MAX_HANGOVER_S,
    Settle,
    SpeechGate,
    SpeechPipeline,
    Submit,
)

if TYPE_CHECKING:
    from voxgate.biometrics.engine import Biometrics

__all__ = [
    "CHUNK_S",
    "MAX_HANGOVER_S",
    "InfoValue",
    "SpeechGate",
    "StreamCapacity",
    "StreamClosed",
    "StreamError",
    "StreamExists",
    "StreamNotFound",
    "StreamSession",
    "StreamType",
    "VerdictMark",
]

InfoValue = str | bool | int | float
# verdicts a stream remembers for its timeline (the console's Live calls page): a minute of polls at 2 a second
VERDICT_HISTORY = 120


@dataclass(frozen=True)
class VerdictMark:
    """One verification of a stream, placed on the stream's own clock (seconds of audio received)."""

    at_s: float  # the stream's duration_s when it was scored
    verdict: str  # verified | not_sure | not_verified
    score: float  # the LLR
    speech_s: float  # net speech the score is based on


class StreamType(StrEnum):
    HTTP = "HTTP"
    WEBSOCKET = "WebSocket"
    SIP = "SIP"


class StreamError(VoxgateError):
    """A problem with a live stream."""


class StreamNotFound(StreamError):
    """No live stream has that uuid (never opened, closed, or timed out)."""


class StreamClosed(StreamNotFound):
    """The stream was closed while audio was still being sent to it."""


class StreamExists(StreamError):
    """A stream with that uuid is already running."""


class StreamCapacity(StreamError):
    """The configured maximum of concurrent streams is running."""


class StreamSession:
    """One live stream (any door): audio in, an incremental voiceprint out.

    Two ways in. Offline tools call the blocking :meth:`push`, which runs the pipeline's stages inline.
    A server's session is given ``submit`` (the inference engine's): :meth:`feed` then only queues the
    audio for the pipeline, and the engine's worker runs the stages for many streams in shared batches.
    Without ``submit``, :meth:`feed` runs :meth:`push` in a worker thread. :meth:`settle` goes the same
    way: through ``settle`` (the same engine's), or inline without ``submit``.
    """

    def __init__(
        self,
        uuid: str,
        type: StreamType,
        sample_rate_hz: int,
        info: Mapping[str, InfoValue],
        biometrics: Biometrics,
        *,
        chunk_s: float = CHUNK_S,
        max_speech_s: float | None = None,
        submit: Submit | None = None,
        settle: Settle | None = None,
        max_backlog_s: float = MAX_BACKLOG_S,
        channels: int = 1,
        channel: int = 0,
    ) -> None:
        self.pipeline = SpeechPipeline(
            uuid, sample_rate_hz, biometrics, chunk_s=chunk_s, max_speech_s=max_speech_s
        )
        self.uuid = uuid
        self.type = type
        self.sample_rate_hz = sample_rate_hz
        self.info: dict[str, InfoValue] = dict(info)
        self.started = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        self.last_data = self.started_monotonic  # time.monotonic() of the last audio received
        self.close_reason: str | None = None  # why it closed: closed, idle_timeout, force_off, shutdown...
        self.lock = asyncio.Lock()  # keeps this stream's pushes in order when they leave the event loop
        self.busy = 0  # pushes in progress (an idle timeout never closes a stream mid-push)
        self.last_verdict: str | None = None  # the last verification result on this stream
        self.last_score: float | None = None
        self.verdicts: deque[VerdictMark] = deque(maxlen=VERDICT_HISTORY)  # oldest first
        # how far this stream's audio may run ahead of its analysis (the engine's limit): a feeder
        # (voxgate.streams.feeder) queues at most this much more before its door waits or drops audio
        self.max_backlog_s = max_backlog_s
        self.dropped_s = 0.0  # audio a door could not hold back and dropped (a feeder counts it), seconds
        self._submit = submit
        self._settle = settle
        # raw bytes in: ``channel`` of ``channels`` interleaved is analysed (the HTTP door's; others mono)
        self._frames = FrameBuffer(channels, channel)

    # -- what a listing shows ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.pipeline.closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self.pipeline.closed = value

    @property
    def max_speech_s(self) -> float | None:
        return self.pipeline.max_speech_s

    @property
    def duration_s(self) -> float:
        """Seconds of audio received."""
        return self.pipeline.duration_s

    @property
    def speech_s(self) -> float:
        """Net speech in the voiceprint (embedded chunks and settled tails), seconds."""
        return self.pipeline.speech_s

    @property
    def heard_speech_s(self) -> float:
        """Net speech detected so far, embedded or still pending, seconds."""
        return self.pipeline.heard_speech_s

    @property
    def chunks(self) -> int:
        return self.pipeline.chunks

    @property
    def buffered_samples(self) -> int:
        """16 kHz samples held by the stages (the stream's audio memory; bounded, never the call)."""
        return self.pipeline.buffered_samples

    @property
    def backlog_s(self) -> float:
        """Audio received but not yet through VAD, seconds: grows only when the engine falls behind."""
        return self.pipeline.backlog_s

    @property
    def capped(self) -> bool:
        """The voiceprint holds ``max_speech_s``: further audio is counted but no longer analysed."""
        return self.pipeline.capped

    @property
    def working(self) -> bool:
        """Audio of this stream is still being analysed (an idle timeout waits for it)."""
        return self.pipeline.working

    def record_verdict(self, verdict: str, score: float, speech_s: float) -> None:
        """Remember a verification's outcome: the last one, and the recent ones as a timeline."""
        self.last_verdict, self.last_score = verdict, score
        self.verdicts.append(VerdictMark(round(self.duration_s, 3), verdict, score, round(speech_s, 3)))

    def idle_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last_data

    def touch(self) -> None:
        self.last_data = time.monotonic()

    async def settled(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything fed so far is in the voiceprint (or the stream closed); False on timeout.
        The HTTP door answers a data request only then, so a verify right after it sees that audio."""
        deadline = time.monotonic() + timeout_s
        self.busy += 1
        try:
            while self.working and not self.closed:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.005)
            return True
        finally:
            self.busy -= 1
            self.touch()

    # -- audio in, blocking (offline tools, tests): the stages inline, VAD one window at a time ---------

    def push_pcm16(self, data: bytes | bytearray | memoryview) -> None:
        """Raw s16le bytes at the stream rate, split anywhere (part of a frame waits for the next push)."""
        self.push(self._frames.push(data))

    def push(self, samples: FloatArray, last: bool = False) -> None:
        """Mono float32 samples at the stream rate; returns when they are in the voiceprint. ``last``: the
        audio ends with them (:meth:`SpeechPipeline.accept`)."""
        if not self.pipeline.push(self._checked(samples), last):
            raise StreamClosed(f"stream {self.uuid} was closed")

    def _checked(self, samples: FloatArray) -> FloatArray:
        if self.closed:
            raise StreamClosed(f"stream {self.uuid} is closed")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"a stream takes mono (samples,) audio, got shape {samples.shape}")
        return samples

    # -- audio in, from the event loop: queued for the engine (or pushed in a worker thread) ------------

    async def feed_pcm16(self, data: bytes | bytearray | memoryview) -> None:
        """Raw s16le bytes at the stream rate, its channel taken (see :meth:`feed`)."""
        await self.feed(self._frames.push(data))

    async def feed(self, samples: FloatArray) -> None:
        """Mono float32 samples at the stream rate. With ``submit`` this only queues them, and waits
        while the stream's backlog is over the engine's limit (backpressure, never dropped audio)."""
        self.touch()
        samples = self._checked(samples)
        if samples.size == 0:
            return
        self.busy += 1
        try:
            if self._submit is not None:
                await self._submit(self.pipeline, samples)
            else:
                async with self.lock:
                    await asyncio.to_thread(self.push, samples)
        finally:
            self.busy -= 1
            self.touch()

    async def settle(self, force: bool = False, wait: bool = True) -> None:
        """Have the settled tail embedded before reading the voiceprint (see
        :meth:`SpeechPipeline.tail_due`; ``force`` takes the open segment's released speech too).
        Costs nothing when no tail is due. Through ``settle`` (the engine's, which runs this stream's
        stages); inline without ``submit``; with ``submit`` but no ``settle`` nothing is settled (only
        the thread that runs the stages may cut a tail). ``wait=False``: the engine is asked, not waited
        for (a later read has the tail)."""
        if self._settle is not None:
            await self._settle(self.pipeline, force=force, wait=wait)
            return
        if self._submit is not None or self.closed:
            return
        if not self.pipeline.tail_due(force) and not self.lock.locked():
            return  # nothing due and no push in progress that could make one: no thread, no lock
        self.busy += 1
        try:
            async with self.lock:  # after the pushes in progress, on a thread of their own kind
                if self.pipeline.tail_due(force) and not self.closed:
                    await asyncio.to_thread(self.pipeline.settle_inline, force)
        finally:
            self.busy -= 1

    # -- voiceprint out --------------------------------------------------------------------------------

    def voiceprint(self, min_speech_s: float = 0.0, what: str = "this operation") -> Voiceprint:
        """The pooled voiceprint of the speech embedded so far, without any forward pass.

        Raises InsufficientSpeech when it holds less than ``min_speech_s`` (or nothing at all).
        """
        return self.pipeline.voiceprint(min_speech_s, what)

    def close(self, reason: str = "closed") -> None:
        """Refuse further audio; a push in progress stops at its next window, and the engine drops the
        stream's queue. Buffers are left to the garbage collector with the session."""
        if not self.closed:
            self.close_reason = reason
        self.closed = True
