"""The contact-centre flow over SIP, end to end: a real `voxgate serve` registers to a real Kamailio
through the API; sipp calls through Kamailio and plays real speech as RTP; the call-centre side finds
each call's stream by its call id, enrolls the caller from one call and verifies a second call of the same
caller and a call of another speaker, over the REST API and as a voice bot does (VoiceAI Connect events). Then 20 calls at once come and go without leaking a stream or port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.telephony import peers
from tests.telephony.conftest import LIVE_PASSWORD, run_sipp

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Kamailio]:
    with peers.kamailio(tmp_path_factory.mktemp("kamailio-live"), sha256=True) as running:
        yield running


@pytest.fixture(scope="module")
def api(live_voxgate: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_voxgate, timeout=60) as anonymous:
        login = anonymous.post("/rest-auth/login/", json={"username": "admin", "password": LIVE_PASSWORD})
    assert login.status_code == 200, login.text
    with httpx.Client(
        base_url=live_voxgate, timeout=60, headers={"Authorization": f"Token {login.json()['key']}"}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def pbx(api: httpx.Client, proxy: peers.Kamailio) -> Iterator[dict[str, Any]]:
    low, high = peers.free_port_range(96)
    body = {
        "host": "127.0.0.1",
        "port": proxy.port,
        "username": peers.USER,
        "password": peers.PASSWORD,
        "expires": 60,
        "rtp_port_min": low,
        "rtp_port_max": high,
        "codecs": ["PCMA", "PCMU"],
    }
    created = api.post("/api/v2/pbx/", json=body)
    assert created.status_code == 201, created.text
    pbx_id = created.json()["id"]
    assert api.post(f"/api/v2/pbx/{pbx_id}/start").status_code == 200
    deadline = time.monotonic() + 15
    while (instance := api.get(f"/api/v2/pbx/{pbx_id}").json())["registration"]["state"] != "registered":
        assert time.monotonic() < deadline, instance
        time.sleep(0.1)
    yield instance
    api.post(f"/api/v2/pbx/{pbx_id}/stop")


def _call(
    tmp: Path, speech_dir: Path, speaker: str, seconds: float, codec: str, caller: str, skip: int = 0
) -> Path:
    pcm = peers.speech_8k(speech_dir, speaker, seconds, skip=skip)
    pcap = tmp / f"{caller}-{speaker}-{codec}.pcap"
    peers.write_pcap(pcap, peers.rtp_packets(peers.encode(codec, pcm), {"PCMU": 0, "PCMA": 8}[codec]))
    return peers.scenario(tmp, pcap, codec, caller)


def _stream_of(api: httpx.Client, callid: str) -> dict[str, Any]:
    found = api.post("/api/v2/streams", json={"info": {"callid": callid}}).json()["streams"]
    return dict(found[0]) if found else {}


async def _wait_speech(api: httpx.Client, callid: str, seconds: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stream = await asyncio.to_thread(_stream_of, api, callid)
        if stream and stream["speech_length"] >= seconds:
            return stream
        assert time.monotonic() < deadline, f"{callid}: {stream}"
        await asyncio.sleep(0.5)


async def _bot_verify(api: httpx.Client, stream: str, speaker: str) -> str:
    """``speakerVerificationVerify`` (text-independent) on a SIP call's stream: the bot ends an utterance
    every 2 s until the completed event; its ``verified``."""

    def post(name: str, **params: Any) -> None:
        body = {"type": "event", "name": name, "activityParams": params}
        posted = api.post(f"/api/v2/bot/{stream}/activities", json=body)
        assert posted.status_code == 200, posted.text

    post(
        "speakerVerificationVerify",
        speakerVerificationSpeakerId=speaker,
        speakerVerificationType="text-independent",
    )
    seen = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        await asyncio.sleep(2.0)
        events = api.get(f"/api/v2/bot/{stream}/activities", params={"after": seen}).json()["activities"]
        seen += len(events)
        done = [e["value"] for e in events if e["name"] == "speakerVerificationVerifyCompleted"]
        if done:
            assert done[0]["success"] is True, done
            assert done[0]["rawResult"]["speech_length"] >= 3.0, done
            return str(done[0]["verified"])
        assert all(e["name"] == "speakerVerificationVerifyProgress" for e in events), events
        post("speakerVerificationEndOfUtterance")
    raise AssertionError(f"{stream}: no speakerVerificationVerifyCompleted in 40 s")


@pytest.mark.asyncio
async def test_enroll_and_verify_callers_over_sip(
    api: httpx.Client, pbx: dict[str, Any], proxy: peers.Kamailio, speech_dir: Path, tmp_path: Path
) -> None:
    calls = {
        "enroll-1@cc": (_call(tmp_path, speech_dir, "3080", 34, "PCMU", "customer-a"), 35_000),
        "same-1@cc": (_call(tmp_path, speech_dir, "3080", 50, "PCMA", "customer-a", skip=3), 51_000),
        "other-1@cc": (_call(tmp_path, speech_dir, "2609", 50, "PCMU", "someone-else"), 51_000),
    }
    sipps = [
        asyncio.create_task(
            run_sipp(
                peers.sipp_command(xml, proxy, call_id=callid.replace("-1@", "-%u@"), hold_ms=hold), tmp_path
            )
        )
        for callid, (xml, hold) in calls.items()
    ]
    try:
        enroll_stream = await _wait_speech(api, "enroll-1@cc", 20, 45)
        assert enroll_stream["type"] == "SIP"
        assert enroll_stream["info"] == {
            "callid": "enroll-1@cc",
            "caller": "customer-a",
            "callee": peers.USER,
            "pbx": pbx["id"],
        }
        enrolled = api.post(
            "/api/v2/enroll", json={"uuid": enroll_stream["uuid"], "external_id": "customer-a"}
        )
        assert enrolled.status_code == 201, enrolled.text
        same = await _wait_speech(api, "same-1@cc", 6, 20)
        other = await _wait_speech(api, "other-1@cc", 6, 20)
        verdict_same = api.post(
            "/api/v2/verify", json={"uuid": same["uuid"], "external_id": "customer-a"}
        ).json()
        verdict_other = api.post(
            "/api/v2/verify", json={"uuid": other["uuid"], "external_id": "customer-a"}
        ).json()
        assert verdict_same["result"] == "verified", verdict_same
        assert verdict_other["result"] == "not_verified", verdict_other
        status = api.get("/api/v2/status").json()
        assert status["streams"]["SIP"] == 3 and status["pbx"][pbx["id"]]["state"] == "registered"
        # a voice bot on the same SIP calls, through the REST door (VoiceAI Connect's events)
        assert await _bot_verify(api, same["uuid"], "customer-a") in ("yes", "unknown")
        assert await _bot_verify(api, other["uuid"], "customer-a") in ("no", "unknown")
    finally:
        results = await asyncio.gather(*sipps)
    for result in results:
        assert result.returncode == 0, result.stdout
    # every call's end closed its stream
    deadline = time.monotonic() + 10
    while api.get("/api/v2/streams").json()["streams"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


@pytest.mark.asyncio
async def test_twenty_concurrent_calls_leave_nothing_behind(
    api: httpx.Client, pbx: dict[str, Any], proxy: peers.Kamailio, speech_dir: Path, tmp_path: Path
) -> None:
    xml = _call(tmp_path, speech_dir, "1688", 4, "PCMA", "queue")
    command = peers.sipp_command(
        xml, proxy, call_id="many-%u@cc", calls=20, concurrent=20, rate=50, hold_ms=5000
    )
    sipp = asyncio.create_task(run_sipp(command, tmp_path))
    most = 0
    while not sipp.done():
        most = max(most, api.get(f"/api/v2/pbx/{pbx['id']}").json()["calls"])
        await asyncio.sleep(0.2)
    result = await sipp
    assert result.returncode == 0, result.stdout
    assert most == 20
    deadline = time.monotonic() + 10
    while api.get("/api/v2/streams").json()["streams"] or api.get(f"/api/v2/pbx/{pbx['id']}").json()["calls"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert api.get("/api/v2/status").json()["max_at_once"] >= 20
    # every RTP port of the range is free again
    for port in range(pbx["rtp_port_min"], pbx["rtp_port_max"] + 1, 2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
