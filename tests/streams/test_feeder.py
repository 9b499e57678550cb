"""The one feeder of the live doors: order, waiting for room, dropping the oldest (counted), failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.audio.resample import resample
from voxgate.audio.types import FloatArray
from voxgate.biometrics.engine import Biometrics
from voxgate.streams.feeder import BATCH_S, Feeder
from voxgate.streams.inference import InferenceEngine
from voxgate.streams.session import StreamClosed, StreamSession, StreamType

RATE = 8000
FRAME = 160  # 20 ms, as both doors deliver it


@pytest.fixture(scope="module")
def speech(speech_dir: Path) -> FloatArray:
    """About 20 s of one LibriSpeech speaker at 8 kHz."""
    paths = sorted((speech_dir / "librispeech_test_other" / "1688").glob("*.flac"))[:2]
    assert paths
    audio = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    return resample(audio, 16000, RATE)


class Recorder:
    """A stream that keeps what it is fed; ``gate`` holds its feed (a stream far behind)."""

    def __init__(self, max_backlog_s: float = 1.0) -> None:
        self.uuid = "00000000-0000-4000-8000-000000000001"
        self.sample_rate_hz = RATE
        self.max_backlog_s = max_backlog_s
        self.closed = False
        self.dropped_s = 0.0
        self.batches: list[FloatArray] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: Exception | None = None

    async def feed(self, samples: FloatArray) -> None:
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.batches.append(samples.copy())

    @property
    def audio(self) -> FloatArray:
        return np.concatenate(self.batches) if self.batches else np.zeros(0, np.float32)


class Failures:
    def __init__(self) -> None:
        self.seen: list[Exception] = []

    async def __call__(self, exc: Exception) -> None:
        self.seen.append(exc)


def frames(audio: FloatArray) -> list[FloatArray]:
    return [audio[i : i + FRAME] for i in range(0, audio.size, FRAME)]


@pytest.mark.asyncio
async def test_every_sample_arrives_in_order_in_batches(speech: FloatArray) -> None:
    stream, failures = Recorder(), Failures()
    feeder = Feeder(stream, on_failure=failures)
    for frame in frames(speech):
        await feeder.put(frame)
    await feeder.finish()
    np.testing.assert_array_equal(stream.audio, speech)
    assert all(b.size % round(BATCH_S * RATE) == 0 for b in stream.batches[:-1]), "whole batches"
    assert feeder.fed_s == pytest.approx(speech.size / RATE)
    assert feeder.dropped_s == 0.0 and not failures.seen


@pytest.mark.asyncio
async def test_put_waits_while_the_queue_is_full_and_loses_nothing(speech: FloatArray) -> None:
    stream, failures = Recorder(max_backlog_s=1.0), Failures()
    stream.gate.clear()  # the stream is far behind: its feed waits
    feeder = Feeder(stream, on_failure=failures)
    ticks = 0

    def waiting() -> None:
        nonlocal ticks
        ticks += 1

    audio = speech[: 4 * RATE]
    sender = asyncio.create_task(_put_all(feeder, audio, waiting))
    await asyncio.sleep(0.3)
    assert not sender.done(), "4 s do not fit: 1 s queued + one batch in flight"
    assert ticks >= 1 and feeder.queued_s <= 1.0
    stream.gate.set()
    await asyncio.wait_for(sender, 10)
    await feeder.finish()
    np.testing.assert_array_equal(stream.audio, audio)
    assert feeder.dropped_s == 0.0 and stream.dropped_s == 0.0


async def _put_all(feeder: Feeder[Recorder], audio: FloatArray, waiting: Callable[[], None]) -> None:
    for frame in frames(audio):
        await feeder.put(frame, waiting)


@pytest.mark.asyncio
async def test_offer_drops_the_oldest_audio_and_counts_it(
    speech: FloatArray, caplog: pytest.LogCaptureFixture
) -> None:
    stream, failures = Recorder(max_backlog_s=2.0), Failures()
    stream.gate.clear()
    feeder = Feeder(stream, on_failure=failures)
    audio = speech[: 10 * RATE]
    with caplog.at_level(logging.WARNING, logger="voxgate.streams.feeder"):
        for frame in frames(audio):
            feeder.offer(frame)  # never waits: RTP arrives in real time
            await asyncio.sleep(0)
    assert feeder.queued_s == pytest.approx(2.0)
    stream.gate.set()
    await feeder.finish()

    batch = round(BATCH_S * RATE)
    # the batch in flight when the stream stalled, then the newest 2 s; the middle was dropped
    np.testing.assert_array_equal(stream.audio, np.concatenate([audio[:batch], audio[-2 * RATE :]]))
    assert feeder.dropped_s == pytest.approx(10.0 - 2.0 - BATCH_S)
    assert stream.dropped_s == pytest.approx(feeder.dropped_s)
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1, "one warning per stream, the count does the rest"
    assert not failures.seen


@pytest.mark.asyncio
async def test_a_failing_feed_is_reported_and_ends_the_feeder(speech: FloatArray) -> None:
    stream, failures = Recorder(), Failures()
    feeder = Feeder(stream, on_failure=failures)
    await feeder.put(speech[: RATE // 2])
    await asyncio.sleep(0.05)
    stream.failure = ValueError("broken audio")
    await feeder.put(speech[RATE // 2 : RATE])
    await asyncio.sleep(0.05)
    assert [str(e) for e in failures.seen] == ["broken audio"]
    assert feeder.done
    feeder.offer(speech[RATE : 2 * RATE])  # a feeder that ended takes nothing more
    await feeder.put(speech[RATE : 2 * RATE])
    await feeder.finish()
    assert stream.audio.size == RATE // 2 and len(failures.seen) == 1


@pytest.mark.asyncio
async def test_a_stream_closed_elsewhere_ends_the_feeder_quietly(speech: FloatArray) -> None:
    stream, failures = Recorder(), Failures()
    stream.failure = StreamClosed("closed elsewhere")
    feeder = Feeder(stream, on_failure=failures)
    await feeder.put(speech[:RATE])
    await asyncio.wait_for(feeder.finish(), 5)
    assert feeder.done and not failures.seen


@pytest.mark.asyncio
async def test_abandon_stops_at_once(speech: FloatArray) -> None:
    stream, failures = Recorder(max_backlog_s=1.0), Failures()
    stream.gate.clear()
    feeder = Feeder(stream, on_failure=failures)
    sender = asyncio.create_task(_put_all(feeder, speech[: 4 * RATE], lambda: None))
    await asyncio.sleep(0.1)
    feeder.abandon()
    await asyncio.wait_for(sender, 2)  # a put waiting for room returns
    await asyncio.wait_for(feeder.finish(), 2)
    assert feeder.done and stream.audio.size == 0 and not failures.seen


@pytest.mark.asyncio
async def test_fed_through_the_engine_the_voiceprint_is_the_inline_one(
    model_dir: Path, speech: FloatArray
) -> None:
    biometrics = Biometrics(model_dir, ["campplus"])
    engine = InferenceEngine(biometrics, max_backlog_s=1.0)
    engine.start()
    try:
        live = StreamSession(
            "live", StreamType.SIP, RATE, {}, biometrics, submit=engine.submit, max_backlog_s=1.0
        )
        failures = Failures()
        feeder = Feeder(live, on_failure=failures)
        for frame in frames(speech):
            await feeder.put(frame)
        await feeder.finish()
        assert await live.settled(120)
    finally:
        engine.stop()
    inline = StreamSession("inline", StreamType.HTTP, RATE, {}, biometrics)
    inline.push(speech)
    assert live.duration_s == pytest.approx(speech.size / RATE) and live.dropped_s == 0.0
    assert live.chunks == inline.chunks >= 2 and live.speech_s == pytest.approx(inline.speech_s)
    cosine = float(
        live.voiceprint().embedding("campplus").vector @ inline.voiceprint().embedding("campplus").vector
    )
    assert cosine > 0.9999
    assert not failures.seen
