"""Webhooks end to end: the real app, real speech and models, a real HTTP receiver on loopback that checks
every signature with the subscription's secret (independently of voxgate's own signing code)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI

from voxgate.api.app import create_app
from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.resample import resample
from voxgate.service.enrollment import ENROLL_CREATED, ENROLL_NOT_ENOUGH
from voxgate.service.runtime import Runtime
from voxgate.service.verification import VERIFY_NO_VOICEPRINT, VERIFY_NOT_ENOUGH
from voxgate.service.webhooks import (
    Delivery,
    Webhooks,
    WebhookSender,
    check_url,
    redact,
    sign,
    verify_signature,
)
from voxgate.settings import Settings, parse_networks
from voxgate.store import events
from voxgate.store.db import Store
from voxgate.store.subscriptions import Subscription

INTERVAL_S = 0.2  # the enroll/verify period, shortened from 1 s
TIMEOUT_S = 1.0
LOOPBACK = "127.0.0.0/8"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_interval_s": INTERVAL_S,
            "webhook_timeout_s": TIMEOUT_S,
            "webhook_retries": 2,
            "webhook_backoff_s": 0.05,
            "stream_idle_timeout_s": 60.0,  # streams here wait for callbacks between their audio
            "stream_first_audio_timeout_s": 60.0,  # ... and before it
            "webhook_allow_networks": LOOPBACK,  # the receiver is on loopback, denied by default
        }
    )


# -- a real receiver -----------------------------------------------------------------------------------


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature checked out with the path's secret

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1. Paths choose the answer: ``/ok/...`` 200, ``/flaky/...`` 500
    twice then 204, ``/fail/...`` always 500, ``/gone/...`` 410, ``/slow/...`` 200 after 3 s, ``/pause/...``
    200 after 0.5 s."""

    base: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: dict[str, int] = field(default_factory=dict)

    def on(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    async def wait(
        self, path: str, until: Callable[[list[Call]], bool], timeout_s: float = 20.0
    ) -> list[Call]:
        deadline = time.monotonic() + timeout_s
        while True:
            calls = self.on(path)
            if until(calls):
                return calls
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {[c.json for c in calls]}")
            await asyncio.sleep(0.05)


def _signed(secret: str | None, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does, written from the README rather than with voxgate's code."""
    if secret is None:
        return False
    timestamp = headers.get("x-voxgate-timestamp", "")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(f"sha256={expected}", headers.get("x-voxgate-signature", ""))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.calls.append(
                    Call(self.path, headers, body, _signed(state.secrets.get(self.path), headers, body))
                )
                state.hits[self.path] = hits = state.hits.get(self.path, 0) + 1
            kind = self.path.split("/")[1]
            if kind in ("slow", "pause"):
                time.sleep(3 if kind == "slow" else 0.5)
            status = {"fail": 500, "gone": 410}.get(kind, 200)
            if kind == "flaky":
                status = 500 if hits <= 2 else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- helpers -------------------------------------------------------------------------------------------


def pcm_8k(speech_dir: Path, speaker: str, files: list[int]) -> bytes:
    """Real LibriSpeech recordings of one speaker, joined, as raw s16le mono at 8 kHz."""
    paths = sorted((speech_dir / "librispeech_test_other" / speaker).glob("*.flac"))
    audio = np.concatenate([sf.read(paths[i], dtype="float32")[0] for i in files])
    return float_to_pcm16(resample(audio, 16000, 8000)).astype("<i2").tobytes()


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def subscribe(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    path: str,
    type: str,
    channel: str,
    external_id: str | None = None,
) -> dict[str, Any]:
    info = {} if external_id is None else {"external_id": external_id}
    body = {"channel_uuid": channel, "webhook": receiver.base + path, "type": type, "info": info}
    response = await client.post("/api/v2/subscription", json=body, headers=auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secrets[path] = created["secret"]
    return created


async def open_stream(
    client: httpx.AsyncClient, auth: dict[str, str], info: dict[str, Any] | None = None
) -> str:
    response = await client.post("/api/v2/stream/HTTP", json={"frequency": 8000, "info": info}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


async def send(client: httpx.AsyncClient, auth: dict[str, str], stream: str, pcm: bytes) -> None:
    response = await client.post(f"/api/v2/stream/HTTP/data/{stream}", content=pcm, headers=auth)
    assert response.status_code == 200, response.text


async def close(client: httpx.AsyncClient, auth: dict[str, str], stream: str) -> None:
    assert (await client.delete(f"/api/v2/stream/HTTP/{stream}", headers=auth)).status_code == 200


async def webhook_events(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get("/api/v2/logging", params={"type": "webhook"}, headers=auth)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


# -- tests ---------------------------------------------------------------------------------------------


def test_signature_and_url_helpers() -> None:
    body = b'{"a":1}'
    signature = sign("s3cret", "1700000000", body)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify_signature("s3cret", body, "1700000000", signature, now=1700000100)
    assert not verify_signature("s3cret", body, "1700000000", signature, now=1700001000), "too old"
    assert not verify_signature("other", body, "1700000000", signature, now=1700000000)
    assert not verify_signature("s3cret", body + b" ", "1700000000", signature, now=1700000000)
    assert not verify_signature("s3cret", body, "soon", signature)
    assert check_url("HTTPS://crm.example.com:8443/h?x=1") == "HTTPS://crm.example.com:8443/h?x=1"
    assert check_url("http://[::1]:8080/hook")
    assert redact("https://user:pw@crm.example.com/h") == "https://user:***@crm.example.com/h"
    assert redact("https://crm.example.com/h") == "https://crm.example.com/h"


@pytest.mark.asyncio
async def test_create_list_delete_and_validation(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    line = await subscribe(client, auth, receiver, "/ok/line", "streams", "crm-line-7")
    assert line["type"] == "streams" and line["channel_uuid"] == "crm-line-7" and line["external_id"] is None
    assert len(line["secret"]) == 64 and int(line["secret"], 16) >= 0
    again = await client.post(
        "/api/v2/subscription",
        json={"channel_uuid": "crm-line-7", "webhook": receiver.base + "/ok/line", "type": "streams"},
        headers=auth,
    )
    assert again.status_code == 409 and line["uuid"] in again.json()["detail"]

    stream = await open_stream(client, auth)
    verify = await subscribe(client, auth, receiver, "/ok/v", "verify", stream.upper(), "alice")
    assert verify["channel_uuid"] == stream, "a stream uuid is kept in its canonical form"

    base = {"channel_uuid": "crm-line-7", "type": "streams", "info": {}}
    bad_urls = {
        "ftp://crm.example.com/h": "http:// or https://",
        "crm.example.com/h": "http:// or https://",
        "javascript:alert(1)": "http:// or https://",
        "http://": "no host",
        "https:///only/a/path": "no host",
        "http://crm example.com/h": "spaces",
        "http://crm.example.com:99999/h": "malformed",
        "http://[::1/h": "malformed",
        "https://crm.example.com/" + "a" * 2100: "2048",
    }
    for url, words in bad_urls.items():
        response = await client.post("/api/v2/subscription", json={**base, "webhook": url}, headers=auth)
        assert response.status_code == 422, (url, response.text)
        assert words in json.dumps(response.json()["detail"]), (url, response.text)
    hook = receiver.base + "/ok/x"
    refused = [
        ({"channel_uuid": "x", "webhook": hook, "type": "bogus"}, 422),
        ({"channel_uuid": "", "webhook": hook, "type": "streams"}, 422),
        ({"webhook": hook, "type": "streams"}, 422),
        ({"channel_uuid": stream, "webhook": hook, "type": "enroll"}, 422),  # no external_id
        ({"channel_uuid": stream, "webhook": hook, "type": "enroll", "info": {"external_id": 42}}, 422),
        ({"channel_uuid": stream, "webhook": hook, "type": "verify", "info": {"external_id": ""}}, 422),
        ({"channel_uuid": "00000000-0000-4000-8000-000000000000", "webhook": hook, "type": "verify",
          "info": {"external_id": "a"}}, 404),
        ({"channel_uuid": "not-a-stream", "webhook": hook, "type": "enroll", "info": {"external_id": "a"}}, 404),
    ]  # fmt: skip
    for body, status in refused:
        response = await client.post("/api/v2/subscription", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"]
    no_external_id = await client.post("/api/v2/subscription", json=refused[3][0], headers=auth)
    assert "info.external_id is required" in json.dumps(no_external_id.json()["detail"])
    assert (await client.post("/api/v2/subscription", json=base)).status_code == 401

    listed = (await client.get("/api/v2/subscription", headers=auth)).json()["subscriptions"]
    assert [s["uuid"] for s in listed] == [line["uuid"], verify["uuid"]]
    assert all("secret" not in s and s["deliveries"]["failed"] == 0 for s in listed)
    only = await client.get("/api/v2/subscription", params={"type": "verify"}, headers=auth)
    assert [s["uuid"] for s in only.json()["subscriptions"]] == [verify["uuid"]]

    by_uuid = await client.request(
        "DELETE", "/api/v2/subscription", json={"uuid": line["uuid"]}, headers=auth
    )
    assert by_uuid.status_code == 200 and by_uuid.json() == {"deleted": [line["uuid"]]}
    twice = await client.request("DELETE", "/api/v2/subscription", json={"uuid": line["uuid"]}, headers=auth)
    assert twice.status_code == 404
    as_created = {  # what a Voice Verify client sends: the creation body
        "channel_uuid": stream.upper(),
        "webhook": receiver.base + "/ok/v",
        "type": "verify",
        "info": {"external_id": "alice"},
    }
    by_body = await client.request("DELETE", "/api/v2/subscription", json=as_created, headers=auth)
    assert by_body.status_code == 200 and by_body.json() == {"deleted": [verify["uuid"]]}
    assert (await client.request("DELETE", "/api/v2/subscription", json={}, headers=auth)).status_code == 422

    runtime_of(app).locked = True
    locked = await client.post(
        "/api/v2/subscription", json={**base, "webhook": receiver.base + "/ok/line"}, headers=auth
    )
    assert locked.status_code == 423
    runtime_of(app).locked = False
    await close(client, auth, stream)


@pytest.mark.asyncio
async def test_stream_callbacks(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    created = await subscribe(client, auth, receiver, "/ok/line", "streams", "crm-line-7")
    await subscribe(client, auth, receiver, "/flaky/line", "streams", "crm-line-7")
    watched = await open_stream(client, auth, {"source_uuid": "crm-line-7", "callid": "c1"})
    others = [
        await open_stream(client, auth, {"source_uuid": "crm-line-8"}),
        await open_stream(client, auth, {"callid": "c2"}),
        await open_stream(client, auth),
    ]
    for stream in [*others, watched]:
        await close(client, auth, stream)

    calls = await receiver.wait("/ok/line", lambda c: len(c) >= 2)
    assert sorted((c.json for c in calls), key=lambda p: p["payload"]["action"]) == [
        {"channel_uuid": "crm-line-7", "type": "stream", "status": 201,
         "payload": {"action": "added", "stream_uuid": watched}},
        {"channel_uuid": "crm-line-7", "type": "stream", "status": 200,
         "payload": {"action": "removed", "stream_uuid": watched}},
    ]  # fmt: skip
    first = calls[0].headers
    assert first["content-type"] == "application/json" and first["x-voxgate-subscription"] == created["uuid"]
    assert all(c.signed for c in calls), "signed with the subscription's secret"

    # the flaky receiver answers 500 twice, then 204: both callbacks get there, after two retries in all
    flaky = await receiver.wait("/flaky/line", lambda c: len(c) >= 4)
    attempts: dict[str, list[str]] = {}
    for call in flaky:
        attempts.setdefault(call.headers["x-voxgate-delivery"], []).append(call.headers["x-voxgate-attempt"])
    assert sorted(attempts.values()) in (
        [["1"], ["1", "2", "3"]],
        [["1", "2"], ["1", "2"]],
    ), "a callback keeps its delivery id through its retries"
    assert all(c.signed for c in flaky), "every attempt is signed afresh"
    await asyncio.sleep(0.5)
    assert len(receiver.on("/ok/line")) == 2, "streams of other channels, or without one, are not announced"
    listed = (await client.get("/api/v2/subscription", headers=auth)).json()["subscriptions"]
    counts = {s["webhook"].rsplit("/", 2)[-2]: s["deliveries"] for s in listed}
    assert counts["ok"]["delivered"] == 2 and counts["ok"]["last_status"] == 200
    assert counts["flaky"]["delivered"] == 2 and counts["flaky"]["retries"] == 2
    assert counts["flaky"]["failed"] == 0
    assert await webhook_events(client, auth) == []


@pytest.mark.asyncio
async def test_failing_receivers(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    await subscribe(client, auth, receiver, "/fail/line", "streams", "line-9")
    await subscribe(client, auth, receiver, "/gone/line", "streams", "line-9")
    await subscribe(client, auth, receiver, "/slow/line", "streams", "line-9")
    started = time.monotonic()
    stream = await open_stream(client, auth, {"source_uuid": "line-9"})
    slow_verify = await subscribe(client, auth, receiver, "/slow/verify", "verify", stream, "nobody")
    await send(client, auth, stream, bytes(8000 * 2))  # 1 s of silence
    assert time.monotonic() - started < TIMEOUT_S, "receivers that hang do not hold up the stream"

    await receiver.wait("/fail/line", lambda c: len(c) == 3)  # 1 + 2 retries
    await receiver.wait("/gone/line", lambda c: len(c) == 1)
    deadline = time.monotonic() + 20
    while True:
        logged = await webhook_events(client, auth)
        failed = {
            e["detail"]["url"].removeprefix(receiver.base): e for e in logged if e["outcome"] == "failed"
        }
        if {"/fail/line", "/gone/line", "/slow/line", "/slow/verify"} <= set(failed):
            break
        assert time.monotonic() < deadline, logged
        await asyncio.sleep(0.1)
    assert failed["/fail/line"]["detail"]["status"] == 500 and failed["/fail/line"]["detail"]["attempts"] == 3
    assert failed["/gone/line"]["detail"]["status"] == 410, "a 4xx is final"
    assert failed["/gone/line"]["detail"]["attempts"] == 1
    for slow in (failed["/slow/line"], failed["/slow/verify"]):
        assert slow["detail"]["status"] is None and "no answer within" in slow["detail"]["error"]
        assert slow["detail"]["attempts"] == 3
    assert (
        failed["/fail/line"]["stream"] == stream and failed["/fail/line"]["detail"]["callback"] == "streams"
    )
    assert failed["/slow/verify"]["detail"]["subscription"] == slow_verify["uuid"]
    assert failed["/slow/verify"]["external_id"] == "nobody"

    # a verify subscription on a hanging receiver skips its ticks while a callback is on its way
    ticks_s = time.monotonic() - started
    deliveries = {c.headers["x-voxgate-delivery"] for c in receiver.on("/slow/verify")}
    assert len(deliveries) <= ticks_s / TIMEOUT_S + 1 < ticks_s / INTERVAL_S
    await close(client, auth, stream)


@pytest.mark.asyncio
async def test_enroll_and_verify_callbacks(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver, speech_dir: Path
) -> None:
    enroll_pcm = pcm_8k(speech_dir, "1688", [0, 1, 6, 7])  # 43 s of one speaker, > 20 s of net speech
    enrolling = await open_stream(client, auth)
    enroll_sub = await subscribe(client, auth, receiver, "/ok/enroll", "enroll", enrolling, "alice")
    await send(client, auth, enrolling, enroll_pcm[: 8000 * 2 * 8])

    def with_speech(calls: list[Call]) -> bool:
        return any(c.json["payload"]["speech_length"] > 0 for c in calls)

    early = await receiver.wait("/ok/enroll", with_speech)
    assert early[-1].json == {
        "channel_uuid": enrolling,
        "type": "enroll",
        "payload": {
            "stream_uuid": enrolling,
            "external_id": "alice",
            "detail": ENROLL_NOT_ENOUGH,
            "speech_length": early[-1].json["payload"]["speech_length"],
        },
        "status": 200,
    }
    await send(client, auth, enrolling, enroll_pcm[8000 * 2 * 8 :])
    calls = await receiver.wait("/ok/enroll", lambda c: c[-1].json["status"] != 200, timeout_s=30)
    final = calls[-1].json
    assert final["payload"]["detail"] == ENROLL_CREATED and final["status"] == 201
    assert final["payload"]["speech_length"] >= 20.0
    speech = [c.json["payload"]["speech_length"] for c in calls]
    assert speech == sorted(speech) and all(
        c.json["payload"]["detail"] == ENROLL_NOT_ENOUGH for c in calls[:-1]
    )
    assert all(c.signed for c in calls)
    await asyncio.sleep(3 * INTERVAL_S)
    assert len(receiver.on("/ok/enroll")) == len(calls), "the created callback is the last"
    info = (await client.post("/api/v2/voiceprint", json={"external_id": "alice"}, headers=auth)).json()
    assert info["exists"] and info["source"]["stream_uuid"] == enrolling
    enroll_events = await events.find(
        runtime_of(app).store.sessions, events.EventFilter(types=(events.ENROLL,), external_id="alice")
    )
    assert [(e.outcome, e.detail["via"]) for e in enroll_events.events] == [
        ("not_enough_speech", "webhook"),
        ("created", "webhook"),
    ], "a subscription records its outcome when it changes, not every second"
    assert enroll_events.events[0].detail["subscription"] == enroll_sub["uuid"]
    await close(client, auth, enrolling)

    same = await open_stream(client, auth)
    other = await open_stream(client, auth)
    await subscribe(client, auth, receiver, "/ok/same", "verify", same, "alice")
    await subscribe(client, auth, receiver, "/ok/other", "verify", other, "alice")
    await subscribe(client, auth, receiver, "/ok/nobody", "verify", same, "nobody")
    waiting = await receiver.wait("/ok/same", lambda c: len(c) >= 1)
    assert waiting[0].json == {
        "channel_uuid": same,
        "type": "verify",
        "status": 200,
        "payload": {
            "stream_uuid": same,
            "external_id": "alice",
            "result": VERIFY_NOT_ENOUGH,
            "speech_length": 0.0,
            "score": None,
        },
    }
    await asyncio.gather(
        send(client, auth, same, pcm_8k(speech_dir, "1688", [2, 3, 4, 5])),  # other sentences, 17 s
        send(client, auth, other, pcm_8k(speech_dir, "3005", [1, 2, 3])),  # another speaker, 21 s
    )

    def scored(calls: list[Call]) -> bool:  # at least 3 chunks of speech embedded (the audio holds 12-15 s)
        return bool(calls) and calls[-1].json["payload"]["speech_length"] >= 9.0

    verdict = (await receiver.wait("/ok/same", scored, timeout_s=30))[-1].json
    rejected = (await receiver.wait("/ok/other", scored, timeout_s=30))[-1].json
    assert verdict["payload"]["result"] == "verified" and verdict["status"] == 200
    assert rejected["payload"]["result"] == "not verified" and rejected["status"] == 200
    assert verdict["payload"]["score"] > rejected["payload"]["score"]
    nobody = await receiver.wait("/ok/nobody", lambda c: len(c) >= 2)
    assert nobody[-1].json["status"] == 404
    assert nobody[-1].json["payload"]["result"] == VERIFY_NO_VOICEPRINT
    assert all(c.signed for path in ("/ok/same", "/ok/other", "/ok/nobody") for c in receiver.on(path))

    for stream in (same, other):
        await close(client, auth, stream)
    left = (await client.get("/api/v2/subscription", headers=auth)).json()["subscriptions"]
    assert left == [], "enroll and verify subscriptions end with their stream"
    await asyncio.sleep(3 * INTERVAL_S)
    count = len(receiver.on("/ok/same"))
    await asyncio.sleep(3 * INTERVAL_S)
    assert len(receiver.on("/ok/same")) == count, "no callbacks after the stream closed"


@pytest.mark.asyncio
async def test_subscriptions_survive_a_restart(settings: Settings, receiver: Receiver) -> None:
    async def lifetime(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://voxgate", timeout=60) as c:
                assert settings.admin_password is not None
                password = settings.admin_password.get_secret_value()
                login = await c.post("/rest-auth/login/", json={"username": "admin", "password": password})
                yield c, {"Authorization": f"Token {login.json()['key']}"}

    first = lifetime(create_app(settings))
    client, auth = await anext(first)
    await subscribe(client, auth, receiver, "/ok/line", "streams", "crm-line-7")
    open_at_shutdown = await open_stream(client, auth, {"source_uuid": "crm-line-7"})
    await receiver.wait("/ok/line", lambda c: len(c) == 1)
    with pytest.raises(StopAsyncIteration):
        await anext(first)  # shutdown: the stream still open is announced as removed
    calls = await receiver.wait("/ok/line", lambda c: len(c) == 2, timeout_s=5)
    assert calls[1].json["payload"] == {"action": "removed", "stream_uuid": open_at_shutdown}

    second = lifetime(create_app(settings))
    client, auth = await anext(second)
    stream = await open_stream(client, auth, {"source_uuid": "crm-line-7"})
    calls = await receiver.wait("/ok/line", lambda c: len(c) == 3)
    assert calls[2].json["payload"] == {"action": "added", "stream_uuid": stream} and calls[2].signed
    with pytest.raises(StopAsyncIteration):
        await anext(second)


@pytest.mark.asyncio
async def test_a_full_queue_drops_the_oldest(tmp_path: Path, receiver: Receiver) -> None:
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    sender = WebhookSender(
        store.sessions, timeout_s=5, retries=0, queue_size=1, workers=1, allow=parse_networks(LOOPBACK)
    )
    try:
        sender.start()
        hook = Subscription("sub-1", "streams", "line", None, receiver.base + "/pause/q", "k" * 64)
        assert sender.submit(Delivery.of(hook, {"n": 0}, "s-1"))
        await receiver.wait("/pause/q", lambda c: len(c) == 1)  # in flight: the receiver takes 0.5 s
        assert sender.submit(Delivery.of(hook, {"n": 1}, "s-1"))  # queued
        assert sender.submit(Delivery.of(hook, {"n": 2}, "s-1")), "submitting never blocks nor refuses"
        stats = sender.stats("sub-1")
        assert stats is not None and stats.dropped == 1
        calls = await receiver.wait("/pause/q", lambda c: len(c) == 2, timeout_s=10)
        assert [c.json for c in calls] == [{"n": 0}, {"n": 2}], "the oldest waiting callback was dropped"
        await asyncio.sleep(1.2)
        page = await events.find(store.sessions, events.EventFilter(types=(events.WEBHOOK,)))
        assert [(e.outcome, e.detail["count"]) for e in page.events] == [(events.DROPPED, 1)]
    finally:
        await sender.stop()
        await store.close()
    assert not sender.running and not sender.submit(Delivery.of(hook, {"n": 3}, "s-1"))


@pytest.mark.asyncio
async def test_the_ticker_is_one_task(app: FastAPI) -> None:
    hooks = runtime_of(app).webhooks
    assert isinstance(hooks, Webhooks)
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert names.count("webhook-ticker") == 1
    assert names.count("webhook-worker-0") == 1
