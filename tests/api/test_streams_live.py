"""GET /api/v2/streams/live: the server-sent events the console's Live calls page reads, with real speech.

Through the app in process (httpx over ASGI buffers a response whole, so each watch is short)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import libri_files
from voxgate.settings import Settings

MIN_ENROLL_S = 8.0  # lowered from 20 s: two LibriSpeech recordings of 9 and 10.6 s of speech


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"min_enroll_speech_s": MIN_ENROLL_S})


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The `streams` events of a whole text/event-stream response."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    found = []
    for block in response.text.split("\n\n"):
        if block.strip():
            name, data = block.split("\n")
            assert name == "event: streams" and data.startswith("data: ")
            found.append(json.loads(data.removeprefix("data: ")))
    return found


def pcm16(speaker: str, indices: list[int]) -> bytes:
    audio = np.concatenate([sf.read(libri_files(speaker)[i], dtype="float32")[0] for i in indices])
    return bytes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.asyncio
async def test_running_stream_with_its_verdict_timeline_then_ended(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    files = [("files", (p.name, p.read_bytes(), "audio/flac")) for p in libri_files("1688")[:2]]
    enrolled = await client.post("/api/v2/import", data={"external_id": "c-1688"}, files=files, headers=auth)
    assert enrolled.status_code == 201, enrolled.text
    opened = await client.post(
        "/api/v2/stream/HTTP", json={"frequency": 16000, "info": {"caller": "+1 555 0100"}}, headers=auth
    )
    uuid = opened.json()["uuid"]
    verdicts = []
    for piece in (pcm16("1688", [6]), pcm16("1688", [7])):  # 8.1 s, then 7.1 s more
        sent = await client.post(f"/api/v2/stream/HTTP/data/{uuid}", content=piece, headers=auth)
        assert sent.status_code == 200, sent.text
        verified = await client.post(
            "/api/v2/verify", json={"uuid": uuid, "external_id": "c-1688"}, headers=auth
        )
        verdicts.append(verified.json())
    assert verdicts[-1]["result"] == "verified", verdicts

    live = events_of(await client.get("/api/v2/streams/live?interval_s=0.2&duration_s=1", headers=auth))
    assert 3 <= len(live) <= 7  # one at once, then about every 0.2 s for 1 s
    (stream,) = live[-1]["running"]
    assert stream["uuid"] == uuid and stream["type"] == "HTTP" and stream["info"] == {"caller": "+1 555 0100"}
    assert stream["last_verdict"] == "verified" and stream["speech_length"] > 0
    timeline = stream["verdicts"]
    assert [(p["verdict"], p["score"]) for p in timeline] == [(v["result"], v["score"]) for v in verdicts]
    assert 0 < timeline[0]["at_s"] < timeline[1]["at_s"] <= stream["duration_s"]
    assert timeline[1]["speech_length"] == pytest.approx(verdicts[1]["speech_length"], abs=1e-3)

    closed = await client.delete(f"/api/v2/stream/HTTP/{uuid}", headers=auth)
    assert closed.status_code == 200
    after = events_of(await client.get("/api/v2/streams/live?duration_s=1", headers=auth))[-1]
    assert after["running"] == []
    (ended,) = after["ended"]
    assert ended["uuid"] == uuid and ended["reason"] == "closed" and ended["verdicts"] == timeline


@pytest.mark.asyncio
async def test_a_start_wakes_the_watch_at_once(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """With a 10 s interval, a 3 s watch gives a snapshot at once, one when a stream starts, one at its end."""
    watch = asyncio.create_task(client.get("/api/v2/streams/live?interval_s=10&duration_s=3", headers=auth))
    await asyncio.sleep(0.5)
    opened = await client.post("/api/v2/stream/HTTP", json={"frequency": 8000}, headers=auth)
    live = events_of(await watch)
    assert len(live) == 3, live
    assert live[0]["running"] == []
    assert [s["uuid"] for s in live[1]["running"]] == [opened.json()["uuid"]]


@pytest.mark.asyncio
async def test_refusals(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert (await client.get("/api/v2/streams/live")).status_code == 401
    for query in ("interval_s=0.1", "interval_s=11", "duration_s=0.5", "duration_s=61", "interval_s=x"):
        refused = await client.get(f"/api/v2/streams/live?{query}", headers=auth)
        assert refused.status_code == 422 and refused.json()["detail"], query
