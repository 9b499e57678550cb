"""Overload defects (issue 13 C13).

(a) Refused requests are folded into at most one ``error`` event per (status, method, route template,
client) per second, with a ``count``: a flood of 404s (verify on a closed stream) no longer costs one
transaction each, and every refusal is still counted.
(b) An HTTP stream that gets no audio within ``VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S`` closes (``no_audio``):
empty opens cannot hold the stream slots.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from voxgate.service.folding import FoldedEvents
from voxgate.service.runtime import Runtime
from voxgate.settings import Settings
from voxgate.store import events
from voxgate.store.db import Store

FIRST_AUDIO_S = 0.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"stream_first_audio_timeout_s": FIRST_AUDIO_S})


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@pytest_asyncio.fixture
async def other_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The same app, from another client address."""
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://voxgate", timeout=60) as c:
        yield c


async def error_events(app: FastAPI) -> list[events.Event]:
    page = await events.find(
        runtime_of(app).store.sessions, events.EventFilter(types=(events.ERROR,)), limit=1000
    )
    return page.events


def by_key(found: list[events.Event]) -> dict[tuple[str, str, str, str], list[events.Event]]:
    keyed: dict[tuple[str, str, str, str], list[events.Event]] = {}
    for e in found:
        keyed.setdefault((e.outcome, e.detail["method"], e.detail["route"], e.detail["client"]), []).append(e)
    return keyed


# -- (a) refused requests ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_flood_of_404s_is_folded_and_counted(
    app: FastAPI, client: httpx.AsyncClient, other_client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    opened = await client.post("/api/v2/stream/HTTP", json={}, headers=auth)
    closed = opened.json()["uuid"]
    assert (await client.delete(f"/api/v2/stream/HTTP/{closed}", headers=auth)).status_code == 200

    verify = {"uuid": closed, "external_id": "alice"}
    first = await client.post("/api/v2/verify", json=verify, headers=auth)
    assert first.status_code == 404
    (seen,) = await error_events(app)  # the first refusal of a key is visible at once
    assert seen.outcome == "404" and seen.detail["count"] == 1
    assert seen.detail["route"] == "/api/v2/verify" and seen.detail["client"] == "127.0.0.1"
    assert seen.detail["method"] == "POST" and "no running stream" in seen.detail["detail"]

    for _ in range(59):
        assert (await client.post("/api/v2/verify", json=verify, headers=auth)).status_code == 404
    for _ in range(20):  # other uuids, other paths: the same route template
        data = f"/api/v2/stream/HTTP/data/{uuid.uuid4()}"
        assert (await client.post(data, content=b"\x00\x00", headers=auth)).status_code == 404
    for _ in range(10):  # another client address: its own events
        assert (await other_client.post("/api/v2/verify", json=verify, headers=auth)).status_code == 404
    for _ in range(5):  # another status: its own events
        assert (await client.post("/api/v2/verify", json=verify)).status_code == 401
    assert len(await error_events(app)) == 4, "one event per key so far, the rest counted"

    await asyncio.sleep(1.3)  # the period ends: what was folded is written, with its count
    keyed = by_key(await error_events(app))
    counts = {key: sorted(e.detail["count"] for e in found) for key, found in keyed.items()}
    assert counts == {
        ("404", "POST", "/api/v2/verify", "127.0.0.1"): [1, 59],
        ("404", "POST", "/api/v2/stream/HTTP/data/{uuid}", "127.0.0.1"): [1, 19],
        ("404", "POST", "/api/v2/verify", "10.9.8.7"): [1, 9],
        ("401", "POST", "/api/v2/verify", "127.0.0.1"): [1, 4],
    }
    folded = max(keyed[("404", "POST", "/api/v2/stream/HTTP/data/{uuid}", "127.0.0.1")], key=lambda e: e.id)
    assert folded.detail["path"].startswith("/api/v2/stream/HTTP/data/"), "the latest path is kept"


@pytest.mark.asyncio
async def test_sustained_refusals_make_one_event_a_second(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    verify = {"uuid": str(uuid.uuid4()), "external_id": "alice"}
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        assert (await client.post("/api/v2/verify", json=verify, headers=auth)).status_code == 404
        sent += 1
    await asyncio.sleep(1.3)
    found = await error_events(app)
    assert sum(e.detail["count"] for e in found) == sent, "every refusal is counted"
    assert 2 <= len(found) <= 4, f"{len(found)} events for {sent} refusals in 2.5 s"
    assert sent > 20


@pytest.mark.asyncio
async def test_what_is_counted_is_written_at_shutdown(tmp_path: Path) -> None:
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    try:
        folded = FoldedEvents(store.sessions, events.ERROR, period_s=60)
        for i in range(7):
            folded.record(("404", "GET", "/x", "1.2.3.4"), "404", path=f"/x/{i}", count_me=i)
        folded.record(("401", "GET", "/x", "1.2.3.4"), "401", path="/x")
        assert folded.pending() == 6
        await folded.stop()
        page = await events.find(store.sessions, events.EventFilter(types=(events.ERROR,)))
        shown: list[tuple[str, Any, Any]] = [
            (e.outcome, e.detail["count"], e.detail["path"]) for e in page.events
        ]
        assert sorted(shown) == [("401", 1, "/x"), ("404", 1, "/x/0"), ("404", 6, "/x/6")]

        few = FoldedEvents(store.sessions, events.ERROR, period_s=60, max_keys=2)
        for client in ("a", "b", "c", "d"):
            few.record(("404", client), "404", client=client)
        await few.stop()
        page = await events.find(store.sessions, events.EventFilter(types=(events.ERROR,)))
        beyond = sorted(
            (e.detail["client"], e.detail["count"]) for e in page.events if e.detail.get("overflow")
        )
        assert beyond == [("c", 1), ("d", 1)], "keys beyond max_keys share one fold, nothing is lost"
    finally:
        await store.close()


# -- (b) streams without audio -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_stream_without_audio_closes_soon(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    async def open_stream() -> str:
        response = await client.post("/api/v2/stream/HTTP", json={"frequency": 8000}, headers=auth)
        assert response.status_code == 201, response.text
        return str(response.json()["uuid"])

    silent, touched, talking = await open_stream(), await open_stream(), await open_stream()
    data = "/api/v2/stream/HTTP/data/{}"
    assert (
        await client.post(data.format(talking), content=b"\x00\x00" * 800, headers=auth)
    ).status_code == 200
    deadline = time.monotonic() + FIRST_AUDIO_S + 3
    while time.monotonic() < deadline:
        # an empty data request is no audio: it does not keep a silent stream open
        await client.post(data.format(touched), content=b"", headers=auth)
        listed = (await client.get("/api/v2/streams", headers=auth)).json()["streams"]
        if [s["uuid"] for s in listed] == [talking]:
            break
        await asyncio.sleep(0.1)
    assert [s["uuid"] for s in listed] == [talking], "the stream that got audio stays open"
    assert (await client.post(data.format(silent), content=b"\x00\x00", headers=auth)).status_code == 404
    page = await events.find(
        runtime_of(app).store.sessions, events.EventFilter(types=(events.STREAM_STOP,)), limit=100
    )
    assert sorted((e.stream_uuid, e.outcome) for e in page.events) == sorted(
        [(silent, "no_audio"), (touched, "no_audio")]
    )
    assert runtime_of(app).streams.first_audio_timeout_s == FIRST_AUDIO_S
    assert (await client.delete(f"/api/v2/stream/HTTP/{talking}", headers=auth)).status_code == 200


def test_the_first_audio_timeout_setting() -> None:
    assert Settings().stream_first_audio_timeout_s == 5.0 < Settings().stream_idle_timeout_s
    for bad in (0, -1, 3601):
        with pytest.raises(ValueError, match="stream_first_audio_timeout_s"):
            Settings(stream_first_audio_timeout_s=bad)
