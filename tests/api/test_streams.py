from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI

from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.resample import resample
from voxgate.service.runtime import Runtime
from voxgate.store import events

LIBRI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "librispeech_test_other"


def pcm_8k(speaker: str, files: slice) -> bytes:
    """LibriSpeech audio of one speaker as raw s16le mono at 8 kHz, as a telephone stream sends it."""
    paths = sorted((LIBRI / speaker).glob("*.flac"))[files]
    assert paths
    audio = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    return float_to_pcm16(resample(audio, 16000, 8000)).astype("<i2").tobytes()


async def odd_chunks(data: bytes, seed: int = 0) -> AsyncIterator[bytes]:
    """The body as a chunked upload of odd-sized pieces (samples split between chunks)."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(data):
        n = int(rng.integers(1, 9000)) | 1
        yield data[i : i + n]
        i += n


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def open_stream(client: httpx.AsyncClient, auth: dict[str, str], **body: object) -> str:
    response = await client.post("/api/v2/stream/HTTP", json=body or None, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


@pytest.mark.asyncio
async def test_open_send_list_find_close(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    info = {"source_uuid": "crm-7", "callid": "call-42", "line": 3}
    stream = await open_stream(client, auth, info=info, frequency=8000)
    assert str(uuid.UUID(stream)) == stream

    pcm = pcm_8k("1998", slice(1, 2))  # 6 s
    response = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=odd_chunks(pcm), headers=auth)
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["uuid"] == stream and state["received_bytes"] == len(pcm)
    assert state["duration_s"] == pytest.approx(len(pcm) / 2 / 8000, abs=1e-3)
    assert state["speech_length"] >= 3.0, "speech is embedded as it arrives"

    listed = (await client.get("/api/v2/streams", headers=auth)).json()["streams"]
    assert [s["uuid"] for s in listed] == [stream]
    assert listed[0]["info"] == info and listed[0]["type"] == "HTTP" and listed[0]["frequency"] == 8000
    assert listed[0]["speech_length"] == state["speech_length"]

    async def find(body: object) -> list[str]:
        response = await client.post("/api/v2/streams", json=body, headers=auth)
        assert response.status_code == 200, response.text
        return [s["uuid"] for s in response.json()["streams"]]

    assert await find({"info": {"callid": "call-42"}}) == [stream]
    assert await find({"info": {"callid": "call-42", "line": 3}}) == [stream]
    assert await find({"uuid": stream}) == [stream]
    assert await find({"info": {"callid": "other"}}) == []
    assert await find({}) == [stream]

    status = (await client.get("/api/v2/status", headers=auth)).json()
    assert status["streams"] == {"HTTP": 1, "WebSocket": 0, "SIP": 0}
    assert status["running"] == 1 and status["max_at_once"] == 1 and status["max_streams"] == 100
    assert {m["model_id"] for m in status["models"]} == {"ecapa", "campplus"}
    assert status["profiles"]["telephone"]["name"].startswith("telephone")
    assert status["profiles"]["wideband"]["name"].startswith("wideband")
    assert status["maintenance"] is False

    closed = await client.delete(f"/api/v2/stream/HTTP/{stream}", headers=auth)
    assert closed.status_code == 200 and closed.json()["uuid"] == stream
    assert (await client.delete(f"/api/v2/stream/HTTP/{stream}", headers=auth)).status_code == 404
    gone = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00\x00", headers=auth)
    assert gone.status_code == 404 and stream in gone.json()["detail"]
    assert (await client.get("/api/v2/streams", headers=auth)).json()["streams"] == []

    page = await events.find(
        runtime_of(app).store.sessions,
        events.EventFilter(types=(events.STREAM_START, events.STREAM_STOP), stream_uuid=stream),
    )
    start, stop = page.events
    assert start.type == events.STREAM_START and start.detail["info"] == info
    assert stop.type == events.STREAM_STOP and stop.outcome == "closed"
    assert stop.duration_s is not None and stop.duration_s > 0 and stop.detail["stream_type"] == "HTTP"


@pytest.mark.asyncio
async def test_defaults_and_bad_input(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    stream = await open_stream(client, auth)  # no body: 8000 Hz, no info
    listed = (await client.post("/api/v2/streams", json={"uuid": stream}, headers=auth)).json()["streams"]
    assert listed[0]["frequency"] == 8000 and listed[0]["info"] == {}

    bodies: list[dict[str, object]] = [
        {"frequency": 7999},
        {"frequency": 48001},
        {"info": {"nested": {"a": 1}}},
        {"info": []},
        {"channels": 0},
        {"channels": 33},
        {"channels": 2, "channel": -1},
    ]
    for body in bodies:
        response = await client.post("/api/v2/stream/HTTP", json=body, headers=auth)
        assert response.status_code == 422, (body, response.text)
    for raw in (b"{not json", b'{"info": "text"}', b'{"info": {"x": NaN}}', b'{"frequency": Infinity}'):
        response = await client.post(
            "/api/v2/stream/HTTP", content=raw, headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (raw, response.text)
    too_many = {"info": {f"k{i}": i for i in range(65)}}
    assert (await client.post("/api/v2/stream/HTTP", json=too_many, headers=auth)).status_code == 422
    assert (await client.post("/api/v2/stream/HTTP", json={"info": None}, headers=auth)).status_code == 201
    wideband = await open_stream(client, auth, frequency=44100)
    assert wideband != stream

    unknown = str(uuid.uuid4())
    for method, path in (
        ("POST", f"/api/v2/stream/HTTP/data/{unknown}"),
        ("DELETE", f"/api/v2/stream/HTTP/{unknown}"),
    ):
        response = await client.request(method, path, content=b"\x00\x00", headers=auth)
        assert response.status_code == 404 and unknown in response.json()["detail"]
    malformed = await client.post("/api/v2/stream/HTTP/data/not-a-uuid", content=b"\x00\x00", headers=auth)
    assert malformed.status_code == 404 and "not a stream uuid" in malformed.json()["detail"]

    assert (await client.post("/api/v2/stream/HTTP")).status_code == 401
    assert (await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00\x00")).status_code == 401
    assert (await client.get("/api/v2/streams")).status_code == 401
    assert (await client.get("/api/v2/status")).status_code == 401


@pytest.mark.asyncio
async def test_a_sample_split_between_requests_is_joined(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    stream = await open_stream(client, auth)
    first = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x01\x00\x02", headers=auth)
    assert first.status_code == 200 and first.json()["duration_s"] == pytest.approx(1 / 8000)
    second = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00", headers=auth)
    assert second.json()["duration_s"] == pytest.approx(2 / 8000)
    empty = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"", headers=auth)
    assert empty.status_code == 200 and empty.json()["received_bytes"] == 0


def interleaved(*channels: bytes) -> bytes:
    """s16le mono signals as one stream of interleaved frames, as long as the shortest."""
    frames = min(len(c) for c in channels) // 2
    columns = [np.frombuffer(c, dtype="<i2")[:frames] for c in channels]
    return np.stack(columns, axis=1).astype("<i2").tobytes()  # (frames, channels), row by row


@pytest.mark.asyncio
async def test_stereo_is_refused_unless_a_channel_is_named(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for body, says in (
        (
            {"channels": 2},
            "the stream has 2 channels; one speaker is analysed: name the channel to use (0..1)",
        ),
        ({"channels": 2, "channel": 2}, "channel 2 does not exist (valid: 0..1)"),
        ({"channel": 1}, "channel 1 does not exist (valid: 0..0)"),
    ):
        response = await client.post("/api/v2/stream/HTTP", json=body, headers=auth)
        assert response.status_code == 400 and says in response.json()["detail"], (body, response.text)
    assert (await client.get("/api/v2/streams", headers=auth)).json()["streams"] == []
    assert await open_stream(client, auth, channels=1, channel=0)


@pytest.mark.asyncio
async def test_a_stereo_stream_analyses_the_named_channel_only(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """The customer on the left, another speaker on the right: each channel is its own voice."""
    left, right = pcm_8k("3005", slice(0, 7)), pcm_8k("1688", slice(0, 5))  # 49 s and 40 s
    stereo = interleaved(left, right)
    streams = {}
    for channel in (0, 1):
        streams[channel] = await open_stream(client, auth, channels=2, channel=channel)
        sent = await client.post(
            f"/api/v2/stream/HTTP/data/{streams[channel]}", content=odd_chunks(stereo, channel), headers=auth
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["duration_s"] == pytest.approx(
            len(stereo) / 4 / 8000, abs=1e-3
        )  # frames, not samples
    enrolled = await client.post(
        "/api/v2/enroll", json={"uuid": streams[0], "external_id": "left"}, headers=auth
    )
    assert enrolled.status_code == 201, enrolled.text

    async def verdict(channel: int) -> str:
        body = {"uuid": streams[channel], "external_id": "left"}
        response = await client.post("/api/v2/verify", json=body, headers=auth)
        assert response.status_code == 200, response.text
        return str(response.json()["result"])

    assert await verdict(0) == "verified"
    assert await verdict(1) == "not_verified", "the right channel is another speaker, not a mix of both"


@pytest.mark.asyncio
async def test_too_large_a_request(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    runtime_of(app).settings.max_stream_request_bytes = 1000
    stream = await open_stream(client, auth)
    declared = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00" * 1002, headers=auth)
    assert declared.status_code == 413 and "1000" in declared.json()["detail"]

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"\x00" * 300

    streamed = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=chunked(), headers=auth)
    assert streamed.status_code == 413
    ok = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00" * 1000, headers=auth)
    assert ok.status_code == 200


@pytest.mark.asyncio
async def test_capacity_and_maintenance(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    runtime = runtime_of(app)
    assert runtime.streams is not None
    runtime.streams.max_streams = 2
    first = await open_stream(client, auth)
    await open_stream(client, auth)
    full = await client.post("/api/v2/stream/HTTP", headers=auth)
    assert full.status_code == 503 and "maximum is 2" in full.json()["detail"]
    await client.delete(f"/api/v2/stream/HTTP/{first}", headers=auth)
    third = await open_stream(client, auth)
    status = (await client.get("/api/v2/status", headers=auth)).json()
    assert status["running"] == 2 and status["max_at_once"] == 2 and status["max_streams"] == 2

    runtime.locked = True
    locked = await client.post("/api/v2/stream/HTTP", headers=auth)
    assert locked.status_code == 423 and "maintenance" in locked.json()["detail"]
    assert (await client.get("/api/v2/status", headers=auth)).json()["maintenance"] is True
    # running streams still take audio; maintenance force_off closes them
    kept = await client.post(f"/api/v2/stream/HTTP/data/{third}", content=b"\x00" * 160, headers=auth)
    assert kept.status_code == 200
    assert await runtime.streams.close_all("force_off") == 2
    assert (await client.get("/api/v2/streams", headers=auth)).json()["streams"] == []


@pytest.mark.asyncio
async def test_idle_stream_closes_by_itself(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    runtime = runtime_of(app)
    assert runtime.streams is not None
    runtime.streams.idle_timeout_s = 0.3
    stream = await open_stream(client, auth)
    for _ in range(40):  # the reaper checks at least once a second
        await asyncio.sleep(0.1)
        if not (await client.get("/api/v2/streams", headers=auth)).json()["streams"]:
            break
    assert (await client.get("/api/v2/streams", headers=auth)).json()["streams"] == []
    assert (
        await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=b"\x00\x00", headers=auth)
    ).status_code == 404
    page = await events.find(
        runtime.store.sessions, events.EventFilter(types=(events.STREAM_STOP,), stream_uuid=stream)
    )
    assert [e.outcome for e in page.events] == ["idle_timeout"]
