"""A stream fed one short utterance gets a verdict: its settled tail is embedded when verify asks."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI

from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.resample import resample
from voxgate.service.runtime import Runtime
from voxgate.settings import Settings

LIBRI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "librispeech_test_other"
MIN_ENROLL_S = 6.0  # two 3 s chunks of a stream: keeps the test fast
MIN_VERIFY_S = 1.0  # below a chunk (3 s): only the tail can give a short utterance a score


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"min_enroll_speech_s": MIN_ENROLL_S, "min_verify_speech_s": MIN_VERIFY_S}
    )


def pcm_8k(speaker: str, file: int, seconds: float | None = None) -> bytes:
    """One LibriSpeech file (its first ``seconds``, then 0.5 s of silence) as 8 kHz s16le."""
    samples, rate = sf.read(sorted((LIBRI / speaker).glob("*.flac"))[file], dtype="float32")
    if seconds is not None:
        samples = np.concatenate([samples[: round(seconds * rate)], np.zeros(rate // 2, dtype=np.float32)])
    return float_to_pcm16(resample(samples, rate, 8000)).astype("<i2").tobytes()


async def stream_of(client: httpx.AsyncClient, auth: dict[str, str], pcm: bytes) -> str:
    opened = await client.post("/api/v2/stream/HTTP", json={"frequency": 8000}, headers=auth)
    assert opened.status_code == 201, opened.text
    stream = str(opened.json()["uuid"])
    sent = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=pcm, headers=auth)
    assert sent.status_code == 200, sent.text
    return stream


@pytest.mark.asyncio
async def test_one_short_utterance_is_verified(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    enroll = await stream_of(client, auth, pcm_8k("1998", 0))
    created = await client.post("/api/v2/enroll", json={"uuid": enroll, "external_id": "bea"}, headers=auth)
    assert created.status_code == 201, created.text

    runtime: Runtime = app.state.runtime
    assert runtime.engine is not None
    tails = runtime.engine.stats.tails
    short = await stream_of(client, auth, pcm_8k("1998", 1, seconds=3.0))  # one utterance, other words
    listed = {s["uuid"]: s for s in (await client.get("/api/v2/streams", headers=auth)).json()["streams"]}
    assert listed[short]["speech_length"] == 0.0, "short of a chunk: nothing embedded before verify"
    assert MIN_VERIFY_S < listed[short]["heard_speech_length"] < 3.0

    bodies = []
    for _ in range(3):  # the first verify embeds the tail, the next ones find nothing new
        response = await client.post(
            "/api/v2/verify", json={"uuid": short, "external_id": "bea"}, headers=auth
        )
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    print(f"\none short utterance: {bodies[0]}")
    assert bodies[0]["result"] in ("verified", "not_sure", "not_verified") and bodies[0]["score"] is not None
    assert bodies[0]["speech_length"] == pytest.approx(listed[short]["heard_speech_length"], abs=0.001)
    assert bodies[0]["result"] == "verified"
    assert all(b["score"] == bodies[0]["score"] for b in bodies), "polls do not embed again"
    assert runtime.engine.stats.tails == tails + 1
