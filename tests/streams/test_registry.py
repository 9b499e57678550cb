from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest

from voxgate.biometrics.engine import Biometrics
from voxgate.errors import ModelNotPrepared, MultiChannelAudio
from voxgate.streams import (
    StreamCapacity,
    StreamClosed,
    StreamExists,
    StreamNotFound,
    StreamRegistry,
    StreamSession,
    StreamType,
)


@pytest.fixture(scope="module")
def vad_only(model_dir: Path) -> Biometrics:
    """VAD without embedding models: these tests never fill a chunk."""
    return Biometrics(model_dir, [])


class Log:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[tuple[str, str]] = []

    async def on_start(self, session: StreamSession) -> None:
        self.started.append(session.uuid)

    async def on_stop(self, session: StreamSession, reason: str) -> None:
        self.stopped.append((session.uuid, reason))


@pytest.mark.asyncio
async def test_create_get_find_close(vad_only: Biometrics) -> None:
    log = Log()
    registry = StreamRegistry(vad_only, on_start=log.on_start, on_stop=log.on_stop)
    a = await registry.create(StreamType.HTTP, 8000, {"callid": "c-1", "line": 7})
    b = await registry.create(StreamType.HTTP, 16000, {"callid": "c-2"})
    c = await registry.create(StreamType.WEBSOCKET, 8000, {}, uuid=str(uuid.uuid4()).upper())
    assert str(uuid.UUID(a.uuid)) == a.uuid and c.uuid == c.uuid.lower()
    assert log.started == [a.uuid, b.uuid, c.uuid]

    assert registry.get(a.uuid) is a
    assert registry.get(a.uuid.upper()) is a
    assert registry.get(c.uuid, StreamType.WEBSOCKET) is c
    with pytest.raises(StreamNotFound, match="HTTP stream"):
        registry.get(c.uuid, StreamType.HTTP)
    with pytest.raises(StreamNotFound, match="not a stream uuid"):
        registry.get("not-a-uuid")
    with pytest.raises(StreamExists):
        await registry.create(StreamType.WEBSOCKET, 8000, uuid=c.uuid)

    assert registry.find(info={"callid": "c-2"}) == [b]
    assert registry.find(info={"line": "7"}) == [a], "a number is found by its text too"
    assert registry.find(a.uuid, {"callid": "c-2"}) == []
    assert registry.find(b.uuid) == [b]
    assert registry.find("garbage") == []
    assert registry.find() == [a, b, c]
    assert registry.running_by_type() == {StreamType.HTTP: 2, StreamType.WEBSOCKET: 1, StreamType.SIP: 0}

    closed = await registry.close(a.uuid)
    assert closed is a and a.closed
    assert log.stopped == [(a.uuid, "closed")]
    with pytest.raises(StreamNotFound):
        registry.get(a.uuid)
    with pytest.raises(StreamClosed):
        a.push(np.zeros(100, dtype=np.float32))
    assert await registry.close_all("force_off") == 2
    assert len(registry) == 0 and registry.max_at_once == 3
    assert sorted(log.stopped[1:]) == sorted([(b.uuid, "force_off"), (c.uuid, "force_off")])


@pytest.mark.asyncio
async def test_a_multi_channel_stream_needs_its_channel_named(vad_only: Biometrics) -> None:
    registry = StreamRegistry(vad_only)
    with pytest.raises(MultiChannelAudio, match=r"the stream has 2 channels; .* name the channel"):
        await registry.create(StreamType.HTTP, 8000, channels=2)
    assert len(registry) == 0, "nothing opened"
    session = await registry.create(StreamType.HTTP, 8000, channels=2, channel=1)
    frames = np.array([[1000, -7]] * 80, dtype="<i2").tobytes()  # (frames, channels), interleaved
    session.push_pcm16(frames[:5])  # a frame split between pushes
    session.push_pcm16(frames[5:])
    assert session.duration_s == pytest.approx(80 / 8000), "frames, not samples"


@pytest.mark.asyncio
async def test_capacity(vad_only: Biometrics) -> None:
    registry = StreamRegistry(vad_only, max_streams=2)
    first = await registry.create(StreamType.HTTP, 8000)
    await registry.create(StreamType.HTTP, 8000)
    with pytest.raises(StreamCapacity, match="maximum is 2"):
        await registry.create(StreamType.HTTP, 8000)
    await registry.close(first.uuid)
    await registry.create(StreamType.HTTP, 8000)
    assert registry.max_at_once == 2


@pytest.mark.asyncio
async def test_idle_streams_close_by_themselves(vad_only: Biometrics) -> None:
    log = Log()
    registry = StreamRegistry(vad_only, idle_timeout_s=0.3, on_stop=log.on_stop)
    registry.start()
    try:
        quiet = await registry.create(StreamType.HTTP, 8000)
        talking = await registry.create(StreamType.HTTP, 8000)
        for _ in range(8):  # 0.8 s, audio every 0.1 s on one stream only
            await talking.feed_pcm16(b"\x00\x00" * 800)
            await asyncio.sleep(0.1)
        assert log.stopped == [(quiet.uuid, "idle_timeout")]
        assert registry.get(talking.uuid) is talking
        await asyncio.sleep(0.8)
        assert (talking.uuid, "idle_timeout") in log.stopped
        assert len(registry) == 0
    finally:
        await registry.stop()


@pytest.mark.asyncio
async def test_a_failing_listener_does_not_break_streams(vad_only: Biometrics) -> None:
    async def broken(session: StreamSession, reason: str = "") -> None:
        raise RuntimeError("webhook down")

    registry = StreamRegistry(vad_only, on_start=broken, on_stop=broken)
    session = await registry.create(StreamType.HTTP, 8000)
    await registry.close(session.uuid)
    assert len(registry) == 0


@pytest.mark.asyncio
async def test_no_models_no_streams() -> None:
    registry = StreamRegistry(None)
    with pytest.raises(ModelNotPrepared):
        await registry.create(StreamType.HTTP, 8000)
