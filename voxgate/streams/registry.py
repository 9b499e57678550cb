"""The live streams of this process: open, find, close; a capacity limit, an idle timeout and a
first-audio timeout.

The registry knows nothing of HTTP or of the store: doors open and feed streams through it, and whoever
needs to know when streams start and stop (the event log, later webhooks) passes listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuid_module
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from voxgate.audio.frames import pick_channel
from voxgate.errors import ModelNotPrepared
from voxgate.streams.session import (
    CHUNK_S,
    InfoValue,
    StreamCapacity,
    StreamExists,
    StreamNotFound,
    StreamSession,
    StreamType,
)
from voxgate.streams.stages import MAX_BACKLOG_S

if TYPE_CHECKING:
    from voxgate.biometrics.engine import Biometrics
    from voxgate.streams.inference import InferenceEngine

log = logging.getLogger(__name__)

MAX_STREAMS = 100  # defaults; the server passes VOXGATE_MAX_STREAMS and VOXGATE_STREAM_IDLE_TIMEOUT_S
IDLE_TIMEOUT_S = 10.0
NO_AUDIO = "no_audio"  # close reason of a stream that got no audio within the first-audio timeout
# Streams a token holder opens: they must bring audio soon. A SIP call is answered for a configured PBX
# and bounded by the call's own RTP timeout (a PBX may send no RTP while a prompt plays).
FIRST_AUDIO_TYPES = frozenset({StreamType.HTTP, StreamType.WEBSOCKET})

StartListener = Callable[[StreamSession], Awaitable[None]]
StopListener = Callable[[StreamSession, str], Awaitable[None]]  # (session, reason)


def parse_uuid(text: str) -> str:
    """The canonical form of a stream uuid; ValueError for anything that is not a UUID."""
    return str(uuid_module.UUID(text))


class StreamRegistry:
    """Live streams by uuid. Single event loop: every method runs on it (pushes leave it, see
    :meth:`StreamSession.feed`)."""

    def __init__(
        self,
        biometrics: Biometrics | None,
        *,
        max_streams: int = MAX_STREAMS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        first_audio_timeout_s: float | None = None,
        chunk_s: float = CHUNK_S,
        max_speech_s: float | None = None,
        engine: InferenceEngine | None = None,
        on_start: StartListener | None = None,
        on_stop: StopListener | None = None,
    ) -> None:
        """``first_audio_timeout_s``: an HTTP or WebSocket stream that received no audio this long after
        it opened closes (reason ``no_audio``); None: only the idle timeout."""
        if max_streams < 1 or idle_timeout_s <= 0:
            raise ValueError("max_streams must be >= 1 and idle_timeout_s > 0")
        if first_audio_timeout_s is not None and first_audio_timeout_s <= 0:
            raise ValueError("first_audio_timeout_s must be > 0 (or None)")
        self.biometrics = biometrics
        self.max_streams = max_streams
        self.idle_timeout_s = idle_timeout_s
        self.first_audio_timeout_s = first_audio_timeout_s
        self.chunk_s = chunk_s
        self.max_speech_s = max_speech_s
        self.engine = engine  # None: streams embed inline in worker threads (tests, tools)
        self.max_at_once = 0  # the most streams that ran at the same time since start
        self._on_start: list[StartListener] = [on_start] if on_start is not None else []
        self._on_stop: list[StopListener] = [on_stop] if on_stop is not None else []
        self._streams: dict[str, StreamSession] = {}
        self._reaper: asyncio.Task[None] | None = None

    def listen(self, on_start: StartListener | None = None, on_stop: StopListener | None = None) -> None:
        """Add listeners (the event log, webhooks, a WebSocket door): each hears every start/stop."""
        if on_start is not None:
            self._on_start.append(on_start)
        if on_stop is not None:
            self._on_stop.append(on_stop)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the idle-timeout task (on the running event loop)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_idle(), name="stream-idle-timeout"
            )

    async def stop(self) -> None:
        """Stop the idle-timeout task (streams stay open; see :meth:`close_all`)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout_s / 4, (self.first_audio_timeout_s or 4.0) / 4))
            try:
                await self.close_idle()
            except Exception:  # the reaper must survive anything a listener does
                log.exception("closing idle streams failed")

    async def close_idle(self) -> list[str]:
        """Close streams without audio for ``idle_timeout_s``, and HTTP and WebSocket streams that got no
        audio at all within ``first_audio_timeout_s`` of opening (never one in the middle of a push)."""
        now = time.monotonic()
        closing: dict[str, str] = {}
        for s in self._streams.values():
            if s.busy or s.working:
                continue
            if s.idle_s(now) > self.idle_timeout_s:
                closing[s.uuid] = "idle_timeout"
            elif self._silent_too_long(s, now):
                closing[s.uuid] = NO_AUDIO
        for stream_uuid, reason in closing.items():
            if stream_uuid in self._streams:
                log.info(
                    "stream idle, closing" if reason == "idle_timeout" else "stream got no audio, closing",
                    extra={"stream_uuid": stream_uuid, "reason": reason},
                )
                await self.close(stream_uuid, reason)
        return list(closing)

    def _silent_too_long(self, session: StreamSession, now: float) -> bool:
        """Opened by a token holder ``first_audio_timeout_s`` ago and not one sample received since. An
        empty data request does not count as audio (it only touches the stream)."""
        limit = self.first_audio_timeout_s
        return (
            limit is not None
            and session.type in FIRST_AUDIO_TYPES
            and now - session.started_monotonic > limit
            and session.duration_s == 0
            and session.backlog_s == 0
        )

    # -- streams -------------------------------------------------------------------------------------

    async def create(
        self,
        type: StreamType,
        sample_rate_hz: int,
        info: Mapping[str, InfoValue] | None = None,
        *,
        uuid: str | None = None,
        channels: int = 1,
        channel: int | None = None,
    ) -> StreamSession:
        """Open a stream (a fresh uuid4 unless the door brings its own, as WebSocket does). Raw audio of
        several interleaved channels needs the one to analyse named (MultiChannelAudio otherwise)."""
        column = pick_channel(channels, channel, "the stream")
        if self.biometrics is None:
            raise ModelNotPrepared("the biometric models are not loaded: run `voxgate models prepare`")
        stream_uuid = parse_uuid(uuid) if uuid is not None else str(uuid_module.uuid4())
        if stream_uuid in self._streams:
            raise StreamExists(f"stream {stream_uuid} already exists")
        if len(self._streams) >= self.max_streams:
            raise StreamCapacity(
                f"{len(self._streams)} streams are running, the configured maximum is {self.max_streams}"
            )
        session = StreamSession(
            stream_uuid,
            type,
            sample_rate_hz,
            info or {},
            self.biometrics,
            chunk_s=self.chunk_s,
            max_speech_s=self.max_speech_s,
            submit=self.engine.submit if self.engine is not None else None,
            settle=self.engine.settle if self.engine is not None else None,
            max_backlog_s=self.engine.max_backlog_s if self.engine is not None else MAX_BACKLOG_S,
            channels=channels,
            channel=column,
        )
        self._streams[stream_uuid] = session
        self.max_at_once = max(self.max_at_once, len(self._streams))
        log.info(
            "stream started",
            extra={"stream_uuid": stream_uuid, "stream_type": type.value, "sample_rate_hz": sample_rate_hz},
        )
        for listener in self._on_start:
            await self._notify(listener(session))
        return session

    def get(self, stream_uuid: str, type: StreamType | None = None) -> StreamSession:
        """The live stream ``stream_uuid`` (of ``type`` if given); StreamNotFound otherwise."""
        try:
            key = parse_uuid(stream_uuid)
        except ValueError:
            raise StreamNotFound(f"{stream_uuid!r} is not a stream uuid") from None
        session = self._streams.get(key)
        if session is None or (type is not None and session.type is not type):
            kind = f"{type.value} stream" if type is not None else "stream"
            raise StreamNotFound(f"no running {kind} {key} (never opened, closed, or timed out)")
        return session

    def all(self) -> list[StreamSession]:
        return sorted(self._streams.values(), key=lambda s: s.started_monotonic)

    def find(
        self, stream_uuid: str | None = None, info: Mapping[str, InfoValue] | None = None
    ) -> list[StreamSession]:
        """Streams with that uuid (if given) whose info holds every given key with the given value."""
        wanted = dict(info or {})
        if stream_uuid is not None:
            try:
                stream_uuid = parse_uuid(stream_uuid)
            except ValueError:
                return []
        found = []
        for session in self.all():
            if stream_uuid is not None and session.uuid != stream_uuid:
                continue
            if info_matches(session.info, wanted):
                found.append(session)
        return found

    def running_by_type(self) -> dict[StreamType, int]:
        counts = Counter(s.type for s in self._streams.values())
        return {t: counts.get(t, 0) for t in StreamType}

    def __len__(self) -> int:
        return len(self._streams)

    async def close(self, stream_uuid: str, reason: str = "closed") -> StreamSession:
        """Close one stream; listeners hear ``reason`` (``closed``, ``idle_timeout``, ``no_audio``,
        ``force_off``...)."""
        session = self.get(stream_uuid)
        del self._streams[session.uuid]
        session.close(reason)
        log.info(
            "stream stopped",
            extra={"stream_uuid": session.uuid, "reason": reason, "speech_s": round(session.speech_s, 2)},
        )
        for stop_listener in self._on_stop:
            await self._notify(stop_listener(session, reason))
        return session

    async def close_all(self, reason: str = "force_off") -> int:
        """Close every stream (maintenance ``force_off``, shutdown); returns how many were closed."""
        closed = 0
        for stream_uuid in list(self._streams):
            if stream_uuid in self._streams:
                await self.close(stream_uuid, reason)
                closed += 1
        return closed

    @staticmethod
    async def _notify(call: Awaitable[None]) -> None:
        try:
            await call
        except Exception:  # a listener (event log, webhook) must not break the stream
            log.exception("stream listener failed")


def info_matches(info: Mapping[str, InfoValue], wanted: Mapping[str, InfoValue]) -> bool:
    """``info`` holds every wanted key with the wanted value (a number also matches its text)."""
    return all(key in info and _same(info[key], value) for key, value in wanted.items())


def _same(actual: InfoValue, wanted: InfoValue) -> bool:
    """Info values match when equal, or when one is the text of the other (``"42"`` finds ``42``)."""
    return actual == wanted or str(actual) == str(wanted)
