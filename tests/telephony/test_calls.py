"""Calls from sipp through a record-routing Kamailio to voxgate's SIP agent in process.

The agent registers with digest auth, answers, and hands RTP audio to a recording stream: what arrives
must be exactly the G.711 decoding of what sipp sent (no packet lost, first ones included; PCMA's
polarity right; full 16-bit samples), RTP from another source must be ignored, and every call must end
with its stream closed and its port free.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.telephony import peers
from tests.telephony.conftest import FakeRegistry, run_sipp
from voxgate.audio.g711 import alaw_decode_float, ulaw_decode_float
from voxgate.telephony.agent import SipAgent


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_round_trip_of_real_speech(
    codec: str,
    agent: SipAgent,
    registry: FakeRegistry,
    proxy: peers.Kamailio,
    speech_dir: Path,
    tmp_path: Path,
) -> None:
    pcm = peers.speech_8k(speech_dir, "3080", 4.0)
    codes = peers.encode(codec, pcm)
    pt = {"PCMU": 0, "PCMA": 8}[codec]
    pcap = tmp_path / f"speech-{codec}.pcap"
    peers.write_pcap(pcap, peers.rtp_packets(codes, pt))
    xml = peers.scenario(tmp_path, pcap, codec, "alice")
    sipp = asyncio.create_task(
        run_sipp(peers.sipp_command(xml, proxy, call_id=f"rt-{codec}-%u@test", hold_ms=4600), tmp_path)
    )
    while not agent.dialogs:
        assert not sipp.done(), (await sipp).stdout
        await asyncio.sleep(0.02)
    (dialog,) = agent.dialogs.values()
    # an intruder sends the same kind of packets to the call's port from another socket
    noise = peers.rtp_packets(np.full(codes.size, 0x55, dtype=np.uint8), pt, ssrc=0x1234ABCD)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        for packet in noise[:50]:
            intruder.sendto(packet, ("127.0.0.1", dialog.rtp_port or 0))
            await asyncio.sleep(0.005)
    result = await sipp
    assert result.returncode == 0, result.stdout
    await registry.wait_closed(1)
    (stream,) = registry.streams.values()
    assert stream.info == {
        "callid": f"rt-{codec}-1@test",
        "caller": "alice",
        "callee": "voxgate",
        "pbx": "test-pbx",
    }
    assert stream.reason == "call_ended"
    expected = (ulaw_decode_float if codec == "PCMU" else alaw_decode_float)(codes)
    np.testing.assert_array_equal(stream.audio, expected)
    assert dialog.receiver is not None and dialog.receiver.rejected >= 50 and dialog.receiver.lost == 0
    assert not agent.dialogs and not agent.ports.in_use


@pytest.mark.asyncio
async def test_twenty_concurrent_calls_bit_exact(
    agent: SipAgent, registry: FakeRegistry, proxy: peers.Kamailio, speech_dir: Path, tmp_path: Path
) -> None:
    codes = peers.encode("PCMU", peers.speech_8k(speech_dir, "2609", 2.0))
    pcap = tmp_path / "short.pcap"
    peers.write_pcap(pcap, peers.rtp_packets(codes, 0))
    xml = peers.scenario(tmp_path, pcap, "PCMU", "many")
    command = peers.sipp_command(
        xml, proxy, call_id="many-%u@test", calls=24, concurrent=24, rate=100, hold_ms=3000
    )
    sipp = asyncio.create_task(run_sipp(command, tmp_path))
    most = 0
    while not sipp.done():
        most = max(most, len(agent.dialogs))
        await asyncio.sleep(0.02)
    result = await sipp
    assert result.returncode == 0, result.stdout
    assert most >= 20
    await registry.wait_closed(24)
    expected = ulaw_decode_float(codes)
    for stream in registry.streams.values():
        np.testing.assert_array_equal(stream.audio, expected)
    assert sorted(s.info["callid"] for s in registry.streams.values()) == sorted(
        f"many-{i}@test" for i in range(1, 25)
    )
    assert not agent.dialogs and not agent.ports.in_use and not registry.running
