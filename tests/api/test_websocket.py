"""The WebSocket door: Voice Verify's WebSocket protocol (Twilio Media Streams' wire format), through a real
`voxgate serve` on loopback and a real WebSocket client, with real speech.

One server, the module's ``live_server``, started with a second port for the same app (``VOXGATE_WS_PORT``),
a short idle timeout, room for three streams and a fast ping (``server_env``). The wire models are also
checked on their own (every field survives encode → decode).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voxgate.api.routers.websocket import RedactTokens, redact
from voxgate.api.websocket import protocol as wire
from voxgate.audio.g711 import alaw_encode_float, ulaw_encode_float
from voxgate.audio.resample import resample

PASSWORD = "websocket-door-password"  # the live_server fixture's admin password
LIBRI = "librispeech_test_other"
FRAME = 160  # 20 ms at 8 kHz, as Twilio sends it
IDLE_S = 4.0  # VOXGATE_STREAM_IDLE_TIMEOUT_S
FIRST_AUDIO_S = 3.0  # VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S
PING_S = 0.2  # VOXGATE_WS_PING_INTERVAL_S
MAX_STREAMS = 3
TWILIO_CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
CONNECTED_REPLY = {"version": "1.0.0", "event": "connected", "msg": "Connection established.", "status": 200}
PING = {"event": "ping", "msg": "Ping.", "status": 100}


def sid(prefix: str = "MZ") -> str:
    """A Twilio-shaped sid: two letters and 32 hex digits (34 characters)."""
    return prefix + uuid.uuid4().hex


def new_uuid() -> str:
    return str(uuid.uuid4())


# -- servers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base: str  # http://127.0.0.1:port
    token: str
    ws_port: int | None = None

    def ws(self, path: str = "/ws", port: int | None = None) -> str:
        host_port = self.base.removeprefix("http://")
        if port is not None:
            host_port = f"127.0.0.1:{port}"
        return f"ws://{host_port}{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers=self.auth, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", headers=self.auth, timeout=60, **kwargs)

    def streams(self) -> dict[str, dict[str, Any]]:
        response = self.get("/api/v2/streams")
        assert response.status_code == 200, response.text
        return {s["uuid"]: s for s in response.json()["streams"]}

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/api/v2/logging", params={"page_size": 1000, **params})
        assert response.status_code == 200, response.text
        return list(response.json()["events"])


def _login(base: str) -> str:
    response = httpx.post(f"{base}/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_env() -> Iterator[int]:
    """The settings this module's ``live_server`` starts with (it passes the environment on); the
    second port."""
    ws_port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXGATE_WS_PORT", str(ws_port))
        env.setenv("VOXGATE_STREAM_IDLE_TIMEOUT_S", str(IDLE_S))
        env.setenv("VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S", str(FIRST_AUDIO_S))
        env.setenv("VOXGATE_MAX_STREAMS", str(MAX_STREAMS))
        env.setenv("VOXGATE_WS_PING_INTERVAL_S", str(PING_S))
        yield ws_port


@pytest.fixture(scope="module")
def main(server_env: int, live_server: str) -> Server:
    return Server(live_server, _login(live_server), ws_port=server_env)


# -- a protocol client -----------------------------------------------------------------------------------


class Client:
    """One WebSocket connection: sends JSON messages, reads replies in order (pings counted, skipped)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pings = 0

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def reply(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """The next message that is not a ping; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                message: dict[str, Any] = json.loads(await self.ws.recv())
                if message == PING:
                    self.pings += 1
                    continue
                return message

    async def no_reply(self, wait_s: float) -> None:
        """Nothing but pings arrives for ``wait_s``."""
        try:
            unexpected = await self.reply(wait_s)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected reply {unexpected}")

    async def handshake(self) -> None:
        await self.send(TWILIO_CONNECTED)
        assert await self.reply() == CONNECTED_REPLY

    async def start(self, stream_sid: str, stream_uuid: str, **parameters: Any) -> dict[str, Any]:
        await self.send(start_message(stream_sid, stream_uuid, **parameters))
        return await self.reply()

    async def media(self, stream_sid: str, payload: str, track: str = "inbound") -> None:
        await self.send(
            {"event": "media", "media": {"track": track, "payload": payload}, "streamSid": stream_sid}
        )

    async def stop(self, stream_sid: str) -> dict[str, Any]:
        await self.send({"event": "stop", "stop": {"accountSid": "", "callSid": ""}, "streamSid": stream_sid})
        return await self.reply()


@contextlib.asynccontextmanager
async def client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with connect(url, additional_headers=headers, open_timeout=20, close_timeout=5) as ws:
        yield Client(ws)


@contextlib.asynccontextmanager
async def session(server: Server, url: str | None = None) -> AsyncIterator[Client]:
    """A connected, handshaken client with the token in the header."""
    async with client(url or server.ws(), server.auth) as c:
        await c.handshake()
        yield c


def start_message(stream_sid: str, stream_uuid: str | None, **parameters: Any) -> dict[str, Any]:
    """A start exactly as the Voice Verify guide shows it."""
    custom = {"uuid": stream_uuid, **parameters} if stream_uuid is not None else dict(parameters)
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "",
            "streamSid": stream_sid,
            "callSid": "",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom,
        },
        "streamSid": stream_sid,
    }


def reply(status: int, event: str, stream_sid: str | None, stream_uuid: str | None) -> dict[str, Any]:
    """What the guide says voxgate answers (``detail``, voxgate's addition, left out)."""
    expected: dict[str, Any] = {"id": stream_sid, "uuid": stream_uuid}
    if status == 201:
        expected["retries"] = 0
    return {**expected, "event": event, "msg": wire.MESSAGES[status], "status": status}


def without_detail(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "detail"}


# -- audio -----------------------------------------------------------------------------------------------


def speech_8k(speech_dir: Path, speaker: str, files: slice) -> np.ndarray:
    """A LibriSpeech speaker's recordings (longest first) joined, at 8 kHz like a phone call."""
    paths = sorted((speech_dir / LIBRI / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration)[files]
    assert paths
    return np.concatenate([resample(sf.read(p, dtype="float32")[0], 16000, 8000) for p in paths])


def payloads(codes: np.ndarray) -> list[str]:
    """G.711 codes as the base64 payloads of 20 ms media messages."""
    return [base64.b64encode(codes[i : i + FRAME].tobytes()).decode() for i in range(0, len(codes), FRAME)]


SILENCE = base64.b64encode(bytes([0xFF]) * FRAME).decode()  # µ-law digital silence, 20 ms


def wait_for(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- the wire models on their own ------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    """Every field (known or not) survives decode → encode → decode."""
    twilio_start = {
        **start_message(sid(), new_uuid(), source_uuid="crm-7", line=3, vip=True),
        "extra": {"kept": [1, 2]},
    }
    twilio_start["start"]["tracks"] = ["inbound", "outbound"]
    messages = [
        TWILIO_CONNECTED,
        {"event": "connected", "version": "1.0.0"},  # Telnyx: no protocol
        twilio_start,
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {"track": "outbound", "chunk": "2", "timestamp": "158", "payload": SILENCE},
            "streamSid": sid(),
        },
        {"event": "media", "media": {"payload": SILENCE}},  # no sequenceNumber, track or streamSid
        {
            "event": "stop",
            "sequenceNumber": "9",
            "streamSid": sid(),
            "stop": {"accountSid": "", "callSid": ""},
        },
        {"event": "mark", "sequenceNumber": "4", "streamSid": sid(), "mark": {"name": "greeting"}},
        {
            "event": "dtmf",
            "streamSid": sid(),
            "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": "1"},
        },
    ]
    for raw in messages:
        decoded = wire.decode(json.dumps(raw))
        again = wire.decode(decoded.encode())
        assert again == decoded, raw
        assert json.loads(decoded.encode()) == raw, "nothing added, nothing dropped"
    telnyx = {
        "event": "start",
        "sequence_number": "1",
        "stream_id": new_uuid(),
        "start": {
            "call_control_id": "v3:abc",
            "custom_parameters": {"uuid": new_uuid()},
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
    decoded = wire.decode(json.dumps(telnyx))
    assert isinstance(decoded, wire.Start) and decoded.sid == telnyx["stream_id"]
    assert wire.decode(decoded.encode()) == decoded, "Telnyx's spelling is read and written as Twilio's"
    request = wire.stream_request(decoded)
    assert request.encoding is wire.Encoding.MULAW and request.info == {} and request.track == "inbound"

    for model in (
        wire.ConnectedReply(),
        wire.Ping(),
        wire.StreamReply.of(201, "start", sid(), new_uuid()),
        wire.StreamReply.of(404, "media", sid(), None, detail="gone"),
    ):
        assert type(model).model_validate_json(model.encode()) == model
    assert json.loads(wire.PING_TEXT) == PING
    assert json.loads(wire.ConnectedReply().encode()) == CONNECTED_REPLY
    started = json.loads(wire.StreamReply.of(201, "start", "MZ1", "u").encode())
    assert list(started) == ["id", "uuid", "retries", "event", "msg", "status"]  # the guide's order


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("MZ" + "a1" * 16, True),
        ("6f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f", True),  # SignalWire, Telnyx
        ("MZ" + "a" * 31, False),
        ("MZ" + "a" * 33, False),
        ("MZ" + "a" * 31 + "-", False),
        ("MZ" + "ä" * 32, False),
    ],
)
def test_sid_rule(value: str, ok: bool) -> None:
    for field in ("accountSid", "callSid", "streamSid"):
        message = start_message("", new_uuid())
        message["start"][field] = value
        if ok:
            wire.decode(json.dumps(message))
        else:
            with pytest.raises(wire.ProtocolError, match=f"start.{field} must be empty, 34 characters"):
                wire.decode(json.dumps(message))


@pytest.mark.parametrize(("payload", "codes"), [("", b""), ("YQ==", b"a"), ("YWI=", b"ab"), ("YWJj", b"abc")])
def test_canonical_base64_is_taken(payload: str, codes: bytes) -> None:
    message = wire.decode(json.dumps({"event": "media", "media": {"payload": payload}, "streamSid": sid()}))
    assert isinstance(message, wire.Media) and message.media.codes == codes


# -- handshake, pings, authentication ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_handshake_and_ping(main: Server) -> None:
    async with client(main.ws(), main.auth) as c:
        await c.no_reply(3 * PING_S)  # no ping before the handshake
        assert c.pings == 0
        await c.handshake()
        pings = [json.loads(await asyncio.wait_for(c.ws.recv(), 5 * PING_S)) for _ in range(2)]
        assert pings == [PING, PING]
        await c.send({"event": "connected", "version": "1.0.0"})  # Telnyx's, and a repeat: answered again
        assert await c.reply() == CONNECTED_REPLY


@pytest.mark.asyncio
async def test_only_version_1_0_0(main: Server) -> None:
    for connected in ({"event": "connected", "protocol": "Call", "version": "2.0.0"}, {"event": "connected"}):
        async with client(main.ws(), main.auth) as c:
            await c.send(connected)
            refused = await c.reply()
            assert refused["event"] == "connected" and refused["status"] == 400
            assert refused.get("version") == connected.get("version")
            assert "only 1.0.0 is accepted" in refused["msg"]
            with pytest.raises(ConnectionClosed) as closed:
                await c.reply()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002

    async with client(main.ws(), main.auth) as c:  # anything before the handshake is refused
        await c.send(start_message(sid(), new_uuid()))
        early = await c.reply()
        assert early["status"] == 400 and early["event"] == "start" and "send {" in early["msg"]
        await c.handshake()  # and the connection stays up


@pytest.mark.asyncio
async def test_authentication(main: Server) -> None:
    token = main.token
    for url, headers in (
        (main.ws(), {"Authorization": f"Token {token}"}),
        (main.ws(), {"Authorization": f"Bearer {token}"}),  # SignalWire's authBearerToken
        (main.ws(f"/ws?token={token}"), None),
        (main.ws(f"/ws/{token}"), None),  # Twilio drops a <Stream> url's query string
        (main.ws("/"), {"Authorization": f"Token {token}"}),  # Voice Verify's bare host
        (main.ws(port=main.ws_port), main.auth),  # VOXGATE_WS_PORT: the same app on a second port
    ):
        async with client(url, headers) as c:
            await c.handshake()

    bad = "f" * 40
    for url, headers in (
        (main.ws(), None),
        (main.ws(), {"Authorization": f"Token {bad}"}),
        (main.ws(f"/ws?token={bad}"), None),
        (main.ws(f"/ws/{bad}"), None),
        (main.ws(), {"Authorization": f"Basic {token}"}),
        (main.ws(port=main.ws_port), {"Authorization": f"Token {bad}"}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with client(url, headers):
                pass
        assert refused.value.response.status_code == 401, url
        assert "token" in json.loads(refused.value.response.body or b"{}")["detail"]

    refusals = [e for e in main.events(type="error") if e["detail"].get("method") == "WEBSOCKET"]
    assert [e["outcome"] for e in refusals[-6:]] == ["401"] * 6
    assert {e["detail"]["path"] for e in refusals} == {"/ws", "/ws/{token}"}
    assert not any(bad in json.dumps(e) for e in refusals), "a token never reaches the event log"


@pytest.mark.asyncio
async def test_a_revoked_token_opens_no_new_stream_on_an_open_connection(main: Server) -> None:
    """Regression: a connection opened before a logout (or password change) kept opening streams."""
    token = _login(main.base)
    async with client(main.ws(), {"Authorization": f"Token {token}"}) as c:
        await c.handshake()
        before_sid, before_uuid = sid(), new_uuid()
        assert await c.start(before_sid, before_uuid) == reply(201, "start", before_sid, before_uuid)
        logout = await asyncio.to_thread(
            httpx.post, f"{main.base}/rest-auth/logout/", headers={"Authorization": f"Token {token}"}
        )
        assert logout.status_code == 200, logout.text
        after_sid, after_uuid = sid(), new_uuid()
        refused = await c.start(after_sid, after_uuid)
        assert refused["status"] == 401 and "revoked" in refused["detail"], refused
        assert after_uuid not in await asyncio.to_thread(main.streams)
        assert await c.stop(before_sid) == reply(204, "stop", before_sid, before_uuid)


# -- streams on one connection, enroll and verify --------------------------------------------------


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Poll a (blocking) condition off the event loop, so the connection's tasks keep running."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def keep_talking(c: Client, sids: list[str]) -> None:
    """The calls go on after the speech: 20 ms of silence on every stream, in real time."""
    while True:
        for stream_sid in sids:
            await c.media(stream_sid, SILENCE)
        await asyncio.sleep(FRAME / 8000)


@pytest.mark.asyncio
async def test_streams_on_one_connection_enroll_and_verify(main: Server, speech_dir: Path) -> None:
    """Three streams on one connection, their 20 ms frames interleaved as a PBX sends them (faster than
    real time): enroll on one (≥ 20 s of net speech of one reader), verify the same reader on another
    and someone else on the third."""
    calls = {
        "enroll": speech_8k(speech_dir, "3080", slice(0, 4, 3)),  # 33 s, 27 s of net speech
        "same": speech_8k(speech_dir, "3080", slice(2, 3)),  # 15 s more of the same reader (12 s of speech)
        "other": speech_8k(speech_dir, "2609", slice(2, 3)),  # 11 s of somebody else (8 s of speech)
    }
    sids = {name: sid() for name in calls}
    uuids = {name: new_uuid() for name in calls}
    frames = {name: payloads(ulaw_encode_float(audio)) for name, audio in calls.items()}
    async with session(main) as c:
        for name in calls:
            started = await c.start(sids[name], uuids[name], source_uuid="crm-7", callid=f"ws-{name}")
            assert started == reply(201, "start", sids[name], uuids[name])
        for i in range(max(len(f) for f in frames.values())):
            for name, stream_frames in frames.items():
                await c.media(sids[name], stream_frames[i] if i < len(stream_frames) else SILENCE)
        talking = asyncio.create_task(keep_talking(c, list(sids.values())))
        try:
            found = await asyncio.to_thread(
                main.post, "/api/v2/streams", json={"info": {"callid": "ws-enroll"}}
            )
            listed = found.json()["streams"]
            assert [(s["uuid"], s["type"], s["frequency"]) for s in listed] == [
                (uuids["enroll"], "WebSocket", 8000)
            ]
            assert listed[0]["info"] == {"source_uuid": "crm-7", "callid": "ws-enroll"}

            def analysed(name: str) -> Callable[[], bool]:
                """The stream's speech, and a second of the silence after it, went through the engine."""
                seconds = len(calls[name]) / 8000 + 1.0
                return lambda: bool(main.streams()[uuids[name]]["duration_s"] >= seconds)

            await until(analysed("enroll"), "the enrollment call to be analysed")
            enrolled = await asyncio.to_thread(
                main.post, "/api/v2/enroll", json={"uuid": uuids["enroll"], "external_id": "ws-alice"}
            )
            assert enrolled.status_code == 201, enrolled.text
            assert enrolled.json()["result"] == "created"

            verdicts = {}
            for name in ("same", "other"):
                await until(analysed(name), f"the {name} call to be analysed")
                response = await asyncio.to_thread(
                    main.post, "/api/v2/verify", json={"uuid": uuids[name], "external_id": "ws-alice"}
                )
                assert response.status_code == 200, response.text
                verdicts[name] = response.json()
        finally:
            talking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talking
        assert verdicts["same"]["speech_length"] >= 6 and verdicts["other"]["speech_length"] >= 6, verdicts
        assert verdicts["same"]["result"] == "verified", verdicts
        assert verdicts["other"]["result"] == "not_verified", verdicts
        assert verdicts["same"]["score"] > verdicts["other"]["score"]
        for name in calls:
            assert await c.stop(sids[name]) == reply(204, "stop", sids[name], uuids[name])
    assert not set(uuids.values()) & set(main.streams())
    stops = main.events(type="stream_stop", stream=uuids["enroll"])
    assert [(e["outcome"], e["detail"]["stream_type"]) for e in stops] == [("closed", "WebSocket")]


# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_error_replies(main: Server) -> None:
    async with session(main) as c:
        unknown = sid()
        await c.media(unknown, SILENCE)
        assert without_detail(await c.reply()) == reply(404, "media", unknown, None)
        await c.media(unknown, SILENCE)  # answered once per streamSid, not 50 times a second
        assert without_detail(await c.stop(unknown)) == reply(404, "stop", unknown, None)

        a_sid, a_uuid = sid(), new_uuid()
        assert await c.start(a_sid, a_uuid) == reply(201, "start", a_sid, a_uuid)
        other_sid = sid()
        assert without_detail(await c.start(other_sid, a_uuid)) == reply(409, "start", other_sid, a_uuid)
        again = await c.start(a_sid, new_uuid())  # the same streamSid twice on one connection
        assert again["status"] == 409 and "already running on this connection" in again["detail"]
        async with session(main) as other:  # a uuid is unique across connections too
            assert (await other.start(sid(), a_uuid))["status"] == 409

        def refused(message: dict[str, Any] | str | bytes) -> Any:
            async def check(expected_status: int, *words: str) -> dict[str, Any]:
                await c.send(message)
                answer = await c.reply()
                assert answer["status"] == expected_status, (message, answer)
                for word in words:
                    assert word in answer["msg"], (word, answer)
                return answer

            return check

        bad_account = start_message(sid(), new_uuid())
        bad_account["start"]["accountSid"] = "AC123"
        await refused(bad_account)(400, "Validation error", "start.accountSid", "34 characters")
        short_sid = "MZ" + "a" * 31
        answer = await refused(start_message(short_sid, new_uuid()))(400, "streamSid")
        assert answer["id"] == short_sid and answer["event"] == "start"
        await refused({"event": "stop", "streamSid": a_sid, "stop": {"callSid": "CA!"}})(400, "stop.callSid")
        await refused(start_message(sid(), None))(400, "start.customParameters.uuid is required")
        await refused(start_message(sid(), str(uuid.uuid1())))(400, "must be a UUID4")
        await refused(start_message(sid(), "not-a-uuid"))(400, "must be a UUID4")
        await refused(start_message(sid(), new_uuid(), nested={"a": 1}))(400, "customParameters.nested")
        wideband = start_message(sid(), new_uuid())
        wideband["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
        await refused(wideband)(415, "Unsupported media format")
        stereo = start_message(sid(), new_uuid())
        stereo["start"]["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2}
        await refused(stereo)(415, "Unsupported media format", "2 channel")
        bad_payload = {"event": "media", "media": {"payload": "not base64!"}, "streamSid": a_sid}
        await refused(bad_payload)(400, "media.payload")
        await refused("{not json")(400, "not JSON")
        await refused('{"event": "media", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")(400, "nests too deeply")
        for payload in ("YWJj=", "a" * 161, "YWJ="):  # excess padding, a bad length, bits after the last byte
            non_canonical = {"event": "media", "media": {"payload": payload}, "streamSid": a_sid}
            await refused(non_canonical)(400, "media.payload", "base64")
        await refused(b"\x00\x01")(400, "binary")
        await refused("[1, 2]")(400, "JSON object")
        await refused({"streamSid": a_sid})(400, "event is missing")
        await refused({"event": "media", "streamSid": a_sid})(400, "media is required")

        # the connection survived all of that: the running stream still takes audio and stops normally
        for _ in range(20):
            await c.media(a_sid, SILENCE)
        await c.send({"event": "mark", "streamSid": a_sid, "mark": {"name": "x"}})
        await c.no_reply(0.3)
        assert await c.stop(a_sid) == reply(204, "stop", a_sid, a_uuid)
        gone = await c.stop(a_sid)  # a stopped stream is not found, and its uuid is remembered
        assert without_detail(gone) == reply(404, "stop", a_sid, a_uuid)

    errors = [e for e in main.events(type="error") if e["detail"].get("method") == "WEBSOCKET"]
    outcomes = {e["outcome"] for e in errors}
    assert {"400", "404", "409", "415"} <= outcomes
    assert any(e["stream"] == a_uuid and e["outcome"] == "409" for e in errors)


@pytest.mark.asyncio
async def test_maintenance(main: Server) -> None:
    async with session(main) as c:
        running_sid, running_uuid = sid(), new_uuid()
        assert (await c.start(running_sid, running_uuid))["status"] == 201
        assert main.get("/api/v2/lock").status_code == 200
        try:
            locked_sid, locked_uuid = sid(), new_uuid()
            refused = await c.start(locked_sid, locked_uuid)
            assert without_detail(refused) == reply(423, "start", locked_sid, locked_uuid)
            await c.media(running_sid, SILENCE)  # running streams keep running in maintenance mode
            forced = main.post("/api/v2/maintenance/force_off")
            assert forced.status_code == 200 and forced.json()["closed"] >= 1
            closed = await c.reply()
            assert without_detail(closed) == reply(423, "stop", running_sid, running_uuid)
            assert "force_off" in closed["detail"]
            await c.no_reply(0.3)  # exactly one reply
        finally:
            assert main.get("/api/v2/maintenance/unlock").status_code == 200
        await c.media(running_sid, SILENCE)
        assert without_detail(await c.reply()) == reply(404, "media", running_sid, running_uuid)
        assert (await c.start(sid(), new_uuid()))["status"] == 201  # unlocked: streams start again


@pytest.mark.asyncio
async def test_idle_timeout_and_capacity(main: Server) -> None:
    async with session(main) as c:
        idle_sid, idle_uuid = sid(), new_uuid()
        assert (await c.start(idle_sid, idle_uuid))["status"] == 201
        for _ in range(25):  # half a second of audio, then nothing
            await c.media(idle_sid, SILENCE)
        began = time.monotonic()
        timed_out = await c.reply(timeout_s=IDLE_S + 5)
        assert time.monotonic() - began >= IDLE_S - 0.5
        assert without_detail(timed_out) == reply(408, "media", idle_sid, idle_uuid)
        assert timed_out["msg"] == "Request timeout."
        await c.no_reply(0.5)  # one reply, not a 408 and then a stop
        assert idle_uuid not in main.streams()
        assert (await c.stop(idle_sid))["status"] == 404
        stops = main.events(type="stream_stop", stream=idle_uuid)
        assert [e["outcome"] for e in stops] == ["idle_timeout"]

        silent_sid, silent_uuid = sid(), new_uuid()  # a start and never any media
        assert (await c.start(silent_sid, silent_uuid))["status"] == 201
        began = time.monotonic()
        never = await c.reply(timeout_s=IDLE_S + 5)
        assert time.monotonic() - began >= FIRST_AUDIO_S - 0.5  # which timeout fired: the stop event says
        assert without_detail(never) == reply(408, "media", silent_sid, silent_uuid)
        assert f"no media within {FIRST_AUDIO_S:g} s" in never["detail"]
        assert [e["outcome"] for e in main.events(type="stream_stop", stream=silent_uuid)] == ["no_audio"]

        running = [(sid(), new_uuid()) for _ in range(MAX_STREAMS)]
        for stream in running:
            assert (await c.start(*stream))["status"] == 201
        one_more = (sid(), new_uuid())
        full = await c.start(*one_more)
        assert without_detail(full) == reply(503, "start", *one_more)
        assert f"maximum is {MAX_STREAMS}" in full["detail"]
        assert (await c.stop(running[0][0]))["status"] == 204
        assert (await c.start(*one_more))["status"] == 201
        for stream_sid, _ in [*running[1:], one_more]:
            assert (await c.stop(stream_sid))["status"] == 204


@pytest.mark.asyncio
async def test_a_dropped_connection_frees_its_streams(main: Server) -> None:
    uuids = [new_uuid(), new_uuid()]
    async with session(main) as c:
        for stream_uuid in uuids:
            stream_sid = sid()
            assert (await c.start(stream_sid, stream_uuid))["status"] == 201
            for _ in range(50):
                await c.media(stream_sid, SILENCE)
        wait_for(lambda: set(uuids) <= set(main.streams()), what="the streams to be listed")
        c.ws.transport.abort()  # the TCP connection drops: no stop, no close frame
    wait_for(lambda: not set(uuids) & set(main.streams()), timeout_s=10, what="the streams to close")
    for stream_uuid in uuids:
        stops = main.events(type="stream_stop", stream=stream_uuid)
        assert [e["outcome"] for e in stops] == ["disconnected"]


# -- what real telephony platforms send -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_twilio_telnyx_and_signalwire_messages(main: Server) -> None:
    """Twilio's exact messages with both tracks, marks and dtmf; Telnyx's spelling with A-law on the second
    port; SignalWire's UUID sids. Only the inbound track is fed."""
    twilio_sid, twilio_uuid = sid("MZ"), new_uuid()
    async with session(main) as c:
        await c.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": sid("AC"),
                    "streamSid": twilio_sid,
                    "callSid": sid("CA"),
                    "tracks": ["inbound", "outbound"],
                    "customParameters": {"uuid": twilio_uuid, "caller": "+420123456789"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": twilio_sid,
            }
        )
        assert await c.reply() == reply(201, "start", twilio_sid, twilio_uuid)
        for n in range(100):  # 2 s inbound, 2 s outbound, interleaved as Twilio sends them
            for track in ("inbound", "outbound"):
                await c.send(
                    {
                        "event": "media",
                        "sequenceNumber": str(2 * n + 2),
                        "media": {
                            "track": track,
                            "chunk": str(n + 1),
                            "timestamp": str(20 * n),
                            "payload": SILENCE,
                        },
                        "streamSid": twilio_sid,
                    }
                )
            if n == 50:
                await c.send(
                    {"event": "mark", "sequenceNumber": "x", "streamSid": twilio_sid, "mark": {"name": "m"}}
                )
                await c.send(
                    {
                        "event": "dtmf",
                        "streamSid": twilio_sid,
                        "dtmf": {"track": "inbound_track", "digit": "5"},
                    }
                )
        await c.send({"event": "media", "media": {"payload": SILENCE}, "streamSid": twilio_sid})  # bare
        # 2.02 s inbound: eight whole 0.25 s batches are fed, the last 20 ms waits for the stop
        wait_for(lambda: main.streams()[twilio_uuid]["duration_s"] >= 2.0, what="the inbound audio")
        time.sleep(0.3)
        listed = main.post("/api/v2/streams", json={"info": {"caller": "+420123456789"}}).json()["streams"]
        assert [s["uuid"] for s in listed] == [twilio_uuid]
        assert listed[0]["duration_s"] == 2.0, "the outbound track is not fed"
        await c.send(
            {
                "event": "stop",
                "sequenceNumber": "300",
                "streamSid": twilio_sid,
                "stop": {"accountSid": sid("AC"), "callSid": sid("CA")},
            }
        )
        assert await c.reply() == reply(204, "stop", twilio_sid, twilio_uuid)

    telnyx_id, telnyx_uuid = new_uuid().upper(), new_uuid()
    alaw = base64.b64encode(alaw_encode_float(np.zeros(FRAME, dtype=np.float32)).tobytes()).decode()
    signalwire_sid, signalwire_uuid = new_uuid(), new_uuid()
    async with client(main.ws("/", port=main.ws_port), {"Authorization": f"Bearer {main.token}"}) as c:
        await c.send({"event": "connected", "version": "1.0.0"})
        assert await c.reply() == CONNECTED_REPLY
        await c.send(
            {
                "event": "start",
                "sequence_number": "1",
                "stream_id": telnyx_id,
                "start": {
                    "call_control_id": "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
                    "from": "+13122010094",
                    "to": "+13122123456",
                    "custom_parameters": {"uuid": telnyx_uuid},
                    "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1},
                },
            }
        )
        assert await c.reply() == reply(201, "start", telnyx_id, telnyx_uuid)
        await c.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": new_uuid(),
                    "callSid": new_uuid(),
                    "streamSid": signalwire_sid,
                    "tracks": ["inbound_track", "outbound_track"],
                    "customParameters": {"uuid": signalwire_uuid},
                },
                "streamSid": signalwire_sid,
            }
        )
        assert await c.reply() == reply(201, "start", signalwire_sid, signalwire_uuid)
        for n in range(50):
            await c.send(
                {
                    "event": "media",
                    "sequence_number": str(n + 2),
                    "media": {"track": "inbound", "payload": alaw},
                    "stream_id": telnyx_id,
                }
            )
            for track in ("inbound_track", "outbound_track"):
                await c.media(signalwire_sid, SILENCE, track=track)
        wait_for(
            lambda: [main.streams()[u]["duration_s"] for u in (telnyx_uuid, signalwire_uuid)] == [1.0, 1.0],
            what="one second on each stream",
        )
        await c.send({"event": "stop", "sequence_number": "99", "stream_id": telnyx_id})
        assert await c.reply() == reply(204, "stop", telnyx_id, telnyx_uuid)
        assert (await c.stop(signalwire_sid))["status"] == 204


def test_tokens_stay_out_of_the_server_log() -> None:
    """uvicorn logs every handshake's path and query; the door's filter blanks the token first."""
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" %d',
        ("1.2.3.4:5", "/ws/s3cret", 401),
        None,
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "WebSocket /ws/<token>" 401'
    assert redact("/ws?token=s3cret&x=1") == "/ws?token=<token>&x=1"
    assert redact("/ws") == "/ws" and redact("/") == "/"
