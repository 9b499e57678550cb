"""The voice-bot flow (VoiceAI Connect's speaker-verification events), through a real `voxgate serve` on
loopback, with real speech: a scripted bot over one WebSocket (Twilio media frames and the bot's
activities on the same connection), and a gateway over REST with an HTTP stream and a webhook.

Same-word clips: ``fsdd_digits_3s_8k`` (spoken digits, telephone band) for the text-dependent flow, its
clips of one speaker being the same small vocabulary; LibriSpeech read speech for text-independent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect

from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.g711 import ulaw_encode_float

PASSWORD = "voice-bot-password"  # the live_server fixture's admin password
FRAME = 160  # 20 ms at 8 kHz
PAUSE_S = 1.2  # silence after each utterance: more than VOXGATE_BOT_END_OF_SPEECH_S (0.8 s)
FSDD = "fsdd_digits_3s_8k"
LIBRI = "librispeech_test_other"
ARABIC = "arabic_commands_3s"
PHRASE = "zero one two three four five six seven eight nine"


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The live server's settings: callbacks to this host's receiver, streams that wait for the bot, a
    configuration-set file."""
    sets = tmp_path_factory.mktemp("bots") / "sets.json"
    sets.write_text(
        json.dumps({"strict": {"type": "text-dependent", "verifyMaxUtterances": 2, "profile": "passphrase"}})
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXGATE_BOT_CONFIG_SETS", str(sets))
        env.setenv("VOXGATE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
        env.setenv("VOXGATE_STREAM_IDLE_TIMEOUT_S", "60")
        env.setenv("VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S", "60")
        yield


@pytest.fixture(scope="module")
def server(server_env: None, live_server: str) -> tuple[str, dict[str, str]]:
    response = httpx.post(f"{live_server}/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return live_server, {"Authorization": f"Token {response.json()['key']}"}


def clip(speech_dir: Path, dataset: str, speaker: str, index: int) -> tuple[np.ndarray, int]:
    paths = sorted((speech_dir / dataset / speaker).glob("*.flac"))
    samples, rate = sf.read(paths[index], dtype="float32")
    return samples, rate


def activity(name: str, **params: Any) -> dict[str, Any]:
    return {"type": "event", "name": name, "activityParams": params}


# -- the scripted bot over one WebSocket -----------------------------------------------------------------


class Bot:
    """A bot and its media gateway on one connection: frames of the call in, activities in, events out."""

    def __init__(self, ws: ClientConnection, sid: str) -> None:
        self.ws = ws
        self.sid = sid

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def event(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The next bot event (pings and stream replies skipped)."""
        async with asyncio.timeout(timeout_s):
            while True:
                message: dict[str, Any] = json.loads(await self.ws.recv())
                if message.get("type") == "event":
                    return message

    async def ask(self, name: str, **params: Any) -> dict[str, Any]:
        await self.send(activity(name, **params))
        return await self.event()

    async def say(self, samples: np.ndarray) -> float:
        """An utterance as 20 ms µ-law frames (faster than real time), then a pause; returns when the
        last frame was sent (time.monotonic())."""
        audio = np.concatenate([samples, np.zeros(int(PAUSE_S * 8000), np.float32)])
        codes = ulaw_encode_float(audio)
        for i in range(0, len(codes), FRAME):
            payload = base64.b64encode(codes[i : i + FRAME].tobytes()).decode()
            await self.send(
                {"event": "media", "media": {"track": "inbound", "payload": payload}, "streamSid": self.sid}
            )
        return time.monotonic()


@contextlib.asynccontextmanager
async def bot_call(base: str, auth: dict[str, str], **parameters: Any) -> AsyncIterator[Bot]:
    sid = "MZ" + uuid.uuid4().hex
    url = base.replace("http://", "ws://") + "/ws"
    async with connect(url, additional_headers=auth, open_timeout=20, close_timeout=5) as ws:
        bot = Bot(ws, sid)
        await bot.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        assert json.loads(await ws.recv())["status"] == 200
        await bot.send(
            {
                "event": "start",
                "start": {
                    "streamSid": sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"uuid": str(uuid.uuid4()), **parameters},
                },
                "streamSid": sid,
            }
        )
        assert json.loads(await ws.recv())["status"] == 201
        yield bot


@pytest.mark.asyncio
async def test_scripted_bot_text_dependent_over_one_websocket(
    server: tuple[str, dict[str, str]], speech_dir: Path
) -> None:
    """The reference's flow: status → text-dependent enroll from 3 utterances (2 progress events, then
    completed) → status → verify the same speaker from 1 utterance and another speaker → delete."""
    base, auth = server
    own = [clip(speech_dir, FSDD, "george", i)[0] for i in range(4)]
    other = clip(speech_dir, FSDD, "jackson", 0)[0]
    speaker = {"speakerVerificationSpeakerId": "123456"}
    async with bot_call(base, auth, speakerVerificationSpeakerPrefix="acme:") as bot:
        status = await bot.ask("speakerVerificationGetSpeakerStatus", **speaker)
        assert status["name"] == "speakerVerificationSpeakerStatus"
        assert status["value"]["success"] is True and status["value"]["enrolled"] is False, status

        await bot.send(
            activity(
                "speakerVerificationEnroll",
                speakerVerificationType="text-dependent",
                speakerVerificationPhrase=PHRASE,
                **speaker,
            )
        )
        heard = []
        for samples in own[:3]:
            await bot.say(samples)
            heard.append(await bot.event())
        names = [e["name"] for e in heard]
        assert names == ["speakerVerificationEnrollProgress"] * 2 + ["speakerVerificationEnrollCompleted"], (
            heard
        )
        assert all(e["value"]["moreAudioRequired"] is True for e in heard[:2])
        assert all(e["streamSid"] == bot.sid for e in heard)
        done = heard[2]["value"]
        assert done["success"] is True and "reasonText" not in done, done
        assert done["rawResult"]["accepted_utterances"] == 3 and done["rawResult"]["type"] == "text-dependent"
        assert [r["utterance"] for r in done["interimRawResults"]] == [1, 2]
        assert all(
            r["utterance_speech_length"] >= 1.0 for r in [*done["interimRawResults"], done["rawResult"]]
        )

        status = await bot.ask("speakerVerificationGetSpeakerStatus", **speaker)
        assert status["value"]["enrolled"] is True
        assert status["value"]["rawResult"]["type"] == "text-dependent"
        assert status["value"]["rawResult"]["phrase"] == PHRASE
        assert status["value"]["rawResult"]["external_id"] == "acme:123456"

        verdicts = {}
        for name, samples in (("same", own[3]), ("other", other)):
            await bot.send(activity("speakerVerificationVerify", **speaker))
            await bot.say(samples)
            verdicts[name] = await bot.event()
        print(
            "\nverify:",
            {
                k: (v["value"].get("verified"), v["value"]["rawResult"].get("llr"))
                for k, v in verdicts.items()
            },
        )
        for verdict in verdicts.values():
            assert verdict["name"] == "speakerVerificationVerifyCompleted"
            assert verdict["value"]["success"] is True, verdict
            assert verdict["value"]["rawResult"]["utterances"] == 1
            assert verdict["value"]["interimRawResults"] == []
        assert verdicts["same"]["value"]["verified"] in ("yes", "unknown"), verdicts
        assert verdicts["other"]["value"]["verified"] in ("no", "unknown"), verdicts
        assert verdicts["same"]["value"]["rawResult"]["llr"] > verdicts["other"]["value"]["rawResult"]["llr"]

        wrong = await bot.ask(
            "speakerVerificationVerify", speakerVerificationType="text-independent", **speaker
        )
        assert wrong["value"]["success"] is False and "text-dependent" in wrong["value"]["reasonText"], wrong
        deleted = await bot.ask("speakerVerificationDeleteSpeaker", **speaker)
        assert deleted.pop("streamSid") == bot.sid  # voxgate's addition: the stream it is about
        assert deleted == {
            "type": "event",
            "name": "SpeakerVerificationActionResult",
            "value": {
                "success": True,
                "rawResult": {"operation": "delete", "speaker_id": "123456", "external_id": "acme:123456"},
            },
        }
        again = await bot.ask("speakerVerificationDeleteSpeaker", **speaker)
        assert again["value"]["success"] is False and "not enrolled" in again["value"]["reasonText"]


@pytest.mark.asyncio
async def test_explicit_end_of_utterance_and_bad_activities(
    server: tuple[str, dict[str, str]], speech_dir: Path
) -> None:
    """A gateway that ends utterances itself (voxgate's silence detection off); sendEventsToBot filters;
    unusable activities are refused on the socket, the connection stays up."""
    base, auth = server
    samples = clip(speech_dir, FSDD, "lucas", 0)[0]
    async with bot_call(base, auth) as bot:
        await bot.send({"type": "event", "name": "speakerVerificationNoSuchThing"})
        refused = json.loads(await bot.ws.recv())
        assert refused["status"] == 400 and "unknown event" in refused["msg"], refused
        await bot.send(
            {
                "type": "event",
                "name": "config",
                "sessionParams": {"speakerVerificationEnrollMaxUtterances": 0},
            }
        )
        refused = json.loads(await bot.ws.recv())
        assert refused["status"] == 400 and "speakerVerificationEnrollMaxUtterances" in refused["msg"], (
            refused
        )
        await bot.send(
            {
                "type": "event",
                "name": "config",
                "sessionParams": {
                    "speakerVerificationEndOfSpeechSilence": 0,
                    "sendEventsToBot": ["speakerVerificationEnrollCompleted"],
                },
            }
        )
        # Bot Framework's shape
        await bot.send(
            {
                "type": "event",
                "name": "speakerVerificationEnroll",
                "channelData": {
                    "activityParams": {
                        "speakerVerificationType": "text-dependent",
                        "speakerVerificationSpeakerId": "eou-1",
                        "speakerVerificationEnrollMaxUtterances": 3,
                    }
                },
            }
        )
        await bot.say(samples[: len(samples) // 6])  # half a second: too little speech
        await bot.send(activity("speakerVerificationEndOfUtterance"))
        await bot.say(samples)
        with pytest.raises(TimeoutError):  # no end of utterance yet, and no progress event wanted
            await bot.event(timeout_s=2.5)
        await bot.send(activity("speakerVerificationEndOfUtterance"))
        await bot.say(samples[len(samples) // 2 :])
        await bot.send(activity("speakerVerificationEndOfUtterance"))
        done = await bot.event()
        assert done["name"] == "speakerVerificationEnrollCompleted", done
        assert done["value"]["success"] is False, done
        assert "speakerVerificationEnrollMaxUtterances 3" in done["value"]["reasonText"], done
        interim = done["value"]["interimRawResults"]
        assert [r["accepted"] for r in interim] == [False, True], interim
        assert "each needs 1 s" in interim[0]["reason"]

        await bot.send(
            activity(
                "speakerVerificationEnroll",
                speakerVerificationSpeakerId="eou-2",
                speakerVerificationTimeout=1,
            )
        )
        late = await bot.event()
        assert late["value"]["success"] is False and "timed out after 1 s" in late["value"]["reasonText"], (
            late
        )
        await bot.send(activity("speakerVerificationEnroll", speakerVerificationSpeakerId="eou-2"))
        await bot.send({"event": "stop", "streamSid": bot.sid})
        ended = await bot.event()
        assert ended["name"] == "speakerVerificationEnrollCompleted" and ended["streamSid"] == bot.sid, ended
        assert ended["value"]["success"] is False and "the call ended" in ended["value"]["reasonText"], ended


# -- a gateway over REST ---------------------------------------------------------------------------------


class Receiver:
    """The bot's webhook: a real HTTP server on loopback that checks voxgate's signature."""

    def __init__(self) -> None:
        self.secret = ""
        self.calls: list[tuple[dict[str, Any], bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stamp = self.headers.get("X-Voxgate-Timestamp", "")
                mac = hmac.new(
                    receiver.secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256
                ).hexdigest()
                signed = hmac.compare_digest(f"sha256={mac}", self.headers.get("X-Voxgate-Signature", ""))
                receiver.calls.append((json.loads(body), signed))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/events"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


class Gateway:
    """An HTTP stream and its bot's REST calls."""

    def __init__(self, client: httpx.AsyncClient, rate: int) -> None:
        self.client = client
        self.rate = rate
        self.uuid = ""
        self.last = 0

    async def open(self) -> None:
        opened = await self.client.post("/api/v2/stream/HTTP", json={"frequency": self.rate})
        assert opened.status_code == 201, opened.text
        self.uuid = opened.json()["uuid"]

    async def post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.client.post(f"/api/v2/bot/{self.uuid}/activities", json=body)
        assert response.status_code == 200, response.text
        return list(response.json()["activities"])

    async def say(self, samples: np.ndarray) -> None:
        audio = np.concatenate([samples, np.zeros(int(PAUSE_S * self.rate), np.float32)])
        pcm = float_to_pcm16(audio).astype("<i2").tobytes()
        sent = await self.client.post(f"/api/v2/stream/HTTP/data/{self.uuid}", content=pcm)
        assert sent.status_code == 200, sent.text

    async def events_until(self, last: str, quiet_s: float = 3.0) -> list[dict[str, Any]]:
        """Events until ``last``, or until none came for ``quiet_s`` (the audio held no more utterances)."""
        found: list[dict[str, Any]] = []
        while not found or found[-1]["name"] != last:
            try:
                found.append(await self.event(quiet_s))
            except AssertionError:
                return found
        return found

    async def event(self, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            response = await self.client.get(
                f"/api/v2/bot/{self.uuid}/activities", params={"after": self.last}
            )
            assert response.status_code == 200, response.text
            found = response.json()["activities"]
            if found:
                self.last += 1
                return dict(found[0])
            assert time.monotonic() < deadline, "no bot event"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def rest(base: str, auth: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as client:
        yield client


def pieces(samples: np.ndarray, rate: int, seconds: float) -> list[np.ndarray]:
    step = int(seconds * rate)
    return [samples[i : i + step] for i in range(0, len(samples) - step + 1, step)]


@pytest.mark.asyncio
async def test_text_independent_over_rest_and_a_webhook(
    server: tuple[str, dict[str, str]], speech_dir: Path
) -> None:
    """Enroll over several utterances until 20 s of net speech; verify with moreAudioRequired until 3 s;
    too little audio at the utterance limit is success false with a reason."""
    base, auth = server
    reader = sorted((speech_dir / LIBRI / "3080").glob("*.flac"), key=lambda p: -sf.info(p).duration)
    receiver = Receiver()
    async with rest(base, auth) as client:
        gateway = Gateway(client, 16000)
        await gateway.open()
        for bad, named in (("ftp://bot.example.com/", "http://"), ("http://10.1.2.3/events", "public")):
            refused = await client.put(f"/api/v2/bot/{gateway.uuid}/webhook", json={"webhook": bad})
            assert refused.status_code == 400 and named in refused.json()["detail"], refused.text
        hook = await client.put(f"/api/v2/bot/{gateway.uuid}/webhook", json={"webhook": receiver.url})
        assert hook.status_code == 200, hook.text
        receiver.secret = hook.json()["secret"]
        speaker = {"speakerVerificationSpeakerId": "ti-7", "speakerVerificationType": "text-independent"}
        assert await gateway.post(activity("speakerVerificationEnroll", **speaker)) == []
        events: list[dict[str, Any]] = []
        for path in reader[:4]:  # a reader's pauses may end utterances inside a recording
            await gateway.say(sf.read(path, dtype="float32")[0])
            events += await gateway.events_until("speakerVerificationEnrollCompleted")
            if events and events[-1]["name"] == "speakerVerificationEnrollCompleted":
                break
        assert len(events) >= 2, events
        assert [e["name"] for e in events[:-1]] == ["speakerVerificationEnrollProgress"] * (len(events) - 1)
        done = events[-1]["value"]
        assert done["success"] is True, done
        assert done["rawResult"]["speech_length"] >= 20.0 and done["rawResult"]["type"] == "text-independent"
        assert done["rawResult"]["utterances"] == len(events)

        short = pieces(sf.read(reader[4], dtype="float32")[0], 16000, 1.5)
        await gateway.post(activity("speakerVerificationVerify", speakerVerificationSpeakerId="ti-7"))
        verify: list[dict[str, Any]] = []
        spoken = None  # a piece that held speech
        for piece in short:
            await gateway.say(piece)
            found = await gateway.events_until("speakerVerificationVerifyCompleted")
            spoken = piece if found and spoken is None else spoken
            verify += found
            if verify and verify[-1]["name"] == "speakerVerificationVerifyCompleted":
                break
        assert verify[0]["name"] == "speakerVerificationVerifyProgress", verify
        assert verify[0]["value"]["moreAudioRequired"] is True
        completed = verify[-1]["value"]
        print("\nTI verify from short pieces:", completed["verified"], completed["rawResult"]["llr"])
        assert completed["success"] is True and completed["verified"] in ("yes", "unknown"), verify
        assert completed["rawResult"]["llr"] > 0, completed  # 3 s of chopped speech: evidence, if thin
        assert verify[-1]["value"]["rawResult"]["speech_length"] >= 3.0

        await gateway.post(
            activity(
                "speakerVerificationVerify",
                speakerVerificationSpeakerId="ti-7",
                speakerVerificationVerifyMaxUtterances=1,
            )
        )
        assert spoken is not None
        await gateway.say(spoken)
        failed = (await gateway.events_until("speakerVerificationVerifyCompleted"))[-1]
        assert failed["name"] == "speakerVerificationVerifyCompleted", failed
        assert failed["value"]["success"] is False and "verified" not in failed["value"], failed
        assert "speakerVerificationVerifyMaxUtterances 1" in failed["value"]["reasonText"], failed
        assert "3 s needed" in failed["value"]["reasonText"], failed

        deadline = time.monotonic() + 20
        while len(receiver.calls) < len(events) + len(verify) + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        receiver.http.shutdown()
        receiver.http.server_close()
        names = [c[0]["name"] for c in receiver.calls]
        assert names.count("speakerVerificationEnrollCompleted") == 1, names
        assert all(signed and c["uuid"] == gateway.uuid for c, signed in receiver.calls)


@pytest.mark.asyncio
async def test_prefixes_keep_customers_apart(server: tuple[str, dict[str, str]], speech_dir: Path) -> None:
    """The same speaker id under two prefixes is two voiceprints, in every operation, listing and snapshot."""
    base, auth = server
    voices = {"acme:": "00000003", "globex:": "00000007"}
    async with rest(base, auth) as client:
        for prefix, speaker in voices.items():
            gateway = Gateway(client, 16000)
            await gateway.open()
            await gateway.post(
                {
                    "type": "event",
                    "name": "config",
                    "sessionParams": {"speakerVerificationSpeakerPrefix": prefix},
                }
            )
            status = await gateway.post(
                activity("speakerVerificationGetSpeakerStatus", speakerVerificationSpeakerId="42")
            )
            assert status[0]["value"]["enrolled"] is False, (prefix, status)
            await gateway.post(
                activity(
                    "speakerVerificationEnroll",
                    speakerVerificationSpeakerId="42",
                    speakerVerificationType="text-dependent",
                )
            )
            for i in range(3):
                await gateway.say(clip(speech_dir, ARABIC, speaker, i)[0])
                last = await gateway.event()
            assert last["name"] == "speakerVerificationEnrollCompleted" and last["value"]["success"], last

        for prefix in voices:
            listed = await client.get("/api/v2/bot/speakers", params={"prefix": prefix})
            assert [s["speaker_id"] for s in listed.json()["speakers"]] == ["42"], listed.text
            snapshot = await client.get("/api/v2/snapshot/generate", params={"prefix": prefix})
            assert [v["external_id"] for v in snapshot.json()["voiceprints"]] == [f"{prefix}42"]

        # a configuration set chosen per operation: its limit and its profile
        gateway = Gateway(client, 16000)
        await gateway.open()
        await gateway.post(
            activity(
                "speakerVerificationVerify",
                speakerVerificationSpeakerId="42",
                speakerVerificationSpeakerPrefix="globex:",
                speakerVerificationConfigSet="strict",
            )
        )
        await gateway.say(clip(speech_dir, ARABIC, voices["globex:"], 5)[0])
        checked = await gateway.event()
        assert checked["name"] == "speakerVerificationVerifyCompleted" and checked["value"]["success"], (
            checked
        )
        raw = checked["value"]["rawResult"]
        assert (raw["config_set"], raw["max_utterances"], raw["profile"]) == (
            "strict",
            2,
            "wideband-passphrase",
        )
        assert checked["value"]["verified"] in ("yes", "unknown"), checked

        async def ask(name: str, prefix: str) -> dict[str, Any]:
            body = activity(name, speakerVerificationSpeakerId="42", speakerVerificationSpeakerPrefix=prefix)
            response = await client.post("/api/v2/bot/activities", json={"activities": [body]})
            assert response.status_code == 200, response.text
            return dict(response.json()["activities"][0]["value"])

        assert (await ask("speakerVerificationDeleteSpeaker", "acme:"))["success"] is True
        assert (await ask("speakerVerificationGetSpeakerStatus", "acme:"))["enrolled"] is False
        assert (await ask("speakerVerificationGetSpeakerStatus", "globex:"))["enrolled"] is True
        assert (await ask("speakerVerificationGetSpeakerStatus", "acme"))["enrolled"] is False  # not "acme:"
        refused = await client.post(
            "/api/v2/bot/activities",
            json={"type": "event", "name": "speakerVerificationEnroll", "activityParams": []},
        )
        assert refused.status_code == 400 and "activityParams" in refused.json()["detail"], refused.text
