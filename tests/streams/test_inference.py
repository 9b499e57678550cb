from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.audio.resample import resample
from voxgate.biometrics.engine import Biometrics
from voxgate.streams.inference import InferenceEngine
from voxgate.streams.session import StreamSession, StreamType

LIBRI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "librispeech_test_other"
SPEAKERS = ("1688", "1998", "2033")


@pytest.fixture(scope="module")
def biometrics(model_dir: Path) -> Biometrics:
    return Biometrics(model_dir, ["campplus"])  # one model keeps these tests fast


@pytest.fixture
def engine(biometrics: Biometrics) -> Iterator[InferenceEngine]:
    engine = InferenceEngine(biometrics, max_backlog_s=2.0)
    engine.start()
    yield engine
    engine.stop()


def call_8k(speaker: str) -> np.ndarray:
    pieces = []
    for path in sorted((LIBRI / speaker).glob("*.flac"))[:2]:
        samples, rate = sf.read(path, dtype="float32")
        pieces.append(resample(samples, rate, 8000))
    return np.concatenate(pieces)


async def send(session: StreamSession, audio: np.ndarray, step: int = 160) -> None:
    """20 ms frames, as a telephony door delivers them."""
    for i in range(0, audio.size, step):
        await session.feed(audio[i : i + step])


@pytest.mark.asyncio
async def test_streams_share_the_engine_and_match_inline_analysis(
    biometrics: Biometrics, engine: InferenceEngine
) -> None:
    calls = {s: call_8k(s) for s in SPEAKERS}
    live = {
        s: StreamSession(s, StreamType.WEBSOCKET, 8000, {}, biometrics, submit=engine.submit)
        for s in SPEAKERS
    }
    await asyncio.gather(*(send(live[s], calls[s]) for s in SPEAKERS))
    for session in live.values():
        assert await session.settled(120)

    assert engine.stats.mean_vad_batch > 1.5, "windows of concurrent streams share VAD calls"
    assert engine.backlog_s == 0.0
    for speaker in SPEAKERS:
        inline = StreamSession(speaker, StreamType.HTTP, 8000, {}, biometrics)
        inline.push(calls[speaker])
        stream = live[speaker]
        assert stream.duration_s == pytest.approx(calls[speaker].size / 8000)
        assert stream.chunks == inline.chunks >= 2
        assert stream.speech_s == pytest.approx(inline.speech_s)
        cosine = float(
            stream.voiceprint().embedding("campplus").vector
            @ inline.voiceprint().embedding("campplus").vector
        )
        assert cosine > 0.9999, (speaker, cosine)


@pytest.mark.asyncio
async def test_a_stream_ahead_of_the_engine_waits_and_loses_nothing(biometrics: Biometrics) -> None:
    slow = copy.copy(biometrics)
    slow.models = dict(biometrics.models)
    engine = InferenceEngine(slow, max_backlog_s=1.0)
    engine.start()
    try:
        session = StreamSession("s", StreamType.HTTP, 8000, {}, slow, submit=engine.submit)
        audio = call_8k("1998")
        most = 0.0
        for i in range(0, audio.size, 4000):  # 0.5 s blocks, as fast as the loop allows
            await session.feed(audio[i : i + 4000])
            most = max(most, session.backlog_s)
        assert most <= 1.0 + 0.5 + 1e-9, "the sender waits once a stream is max_backlog_s behind"
        assert await session.settled(120)
        assert session.duration_s == pytest.approx(audio.size / 8000), "no audio dropped"
        assert session.speech_s > 3.0
    finally:
        engine.stop()


@pytest.mark.asyncio
async def test_speech_cap_stops_the_analysis_not_the_counting(
    biometrics: Biometrics, engine: InferenceEngine
) -> None:
    audio = call_8k("2033")
    session = StreamSession(
        "s", StreamType.HTTP, 8000, {}, biometrics, submit=engine.submit, max_speech_s=3.0
    )
    await send(session, audio, step=8000)
    assert await session.settled(120)
    assert session.capped and session.chunks == 1
    assert session.duration_s == pytest.approx(audio.size / 8000)
    assert session.heard_speech_s < 6.0 < audio.size / 8000 / 2, "capped audio is not analysed"


@pytest.mark.asyncio
async def test_a_closed_stream_is_dropped_from_the_queue(
    biometrics: Biometrics, engine: InferenceEngine
) -> None:
    session = StreamSession("s", StreamType.HTTP, 8000, {}, biometrics, submit=engine.submit)
    await session.feed(call_8k("1688")[: 8000 * 2])
    session.close("closed")
    await asyncio.sleep(0.2)
    other = StreamSession("t", StreamType.HTTP, 8000, {}, biometrics, submit=engine.submit)
    await send(other, call_8k("1688"), step=8000)
    assert await other.settled(60)
    assert engine.backlog_s == 0.0 and other.speech_s > 0
