"""The first-audio timeout (issue 13 C13 b): HTTP and WebSocket streams that get no audio soon after they
open close with reason ``no_audio``; streams with audio, and SIP calls, do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voxgate.biometrics.engine import Biometrics
from voxgate.streams import StreamRegistry, StreamSession, StreamType
from voxgate.streams.registry import NO_AUDIO


@pytest.fixture(scope="module")
def vad_only(model_dir: Path) -> Biometrics:
    return Biometrics(model_dir, [])


@pytest.mark.asyncio
async def test_silent_streams_close_with_no_audio(vad_only: Biometrics) -> None:
    stopped: list[tuple[str, str]] = []

    async def on_stop(session: StreamSession, reason: str) -> None:
        stopped.append((session.uuid, reason))

    registry = StreamRegistry(vad_only, idle_timeout_s=5.0, first_audio_timeout_s=0.3, on_stop=on_stop)
    registry.start()
    try:
        http = await registry.create(StreamType.HTTP, 8000)
        websocket = await registry.create(StreamType.WEBSOCKET, 8000)
        touched = await registry.create(StreamType.HTTP, 8000)
        talking = await registry.create(StreamType.HTTP, 8000)
        call = await registry.create(StreamType.SIP, 8000)
        await talking.feed_pcm16(b"\x00\x00" * 80)  # 10 ms is audio
        for _ in range(8):  # 0.8 s; touching (an empty data request) is not audio
            touched.touch()
            await asyncio.sleep(0.1)
        assert sorted(stopped) == sorted(
            [(http.uuid, NO_AUDIO), (websocket.uuid, NO_AUDIO), (touched.uuid, NO_AUDIO)]
        )
        assert [s.uuid for s in registry.all()] == [talking.uuid, call.uuid]
        assert http.close_reason == NO_AUDIO
    finally:
        await registry.stop()


@pytest.mark.asyncio
async def test_the_idle_timeout_still_wins_when_shorter(vad_only: Biometrics) -> None:
    stopped: list[str] = []

    async def on_stop(session: StreamSession, reason: str) -> None:
        stopped.append(reason)

    registry = StreamRegistry(vad_only, idle_timeout_s=0.2, first_audio_timeout_s=5.0, on_stop=on_stop)
    registry.start()
    try:
        await registry.create(StreamType.HTTP, 8000)
        await asyncio.sleep(0.7)
        assert stopped == ["idle_timeout"]
    finally:
        await registry.stop()


def test_a_bad_first_audio_timeout_is_refused(vad_only: Biometrics) -> None:
    with pytest.raises(ValueError, match="first_audio_timeout_s"):
        StreamRegistry(vad_only, first_audio_timeout_s=0)
