"""Optional and slow (marker ``slow``): a real Asterisk 22 calls voxgate and plays a recording.

Asterisk is not packaged for Debian bookworm: ``scripts/telephony-asterisk.sh`` builds a Debian sid chroot
with it (about 10 minutes the first time, then reused), configures a PJSIP endpoint for voxgate on
loopback only, and runs it. voxgate's agent registers to it with digest auth; Asterisk originates a call
to voxgate that plays real speech; what voxgate receives must be that speech (Asterisk encodes it with
its own G.711 tables, so the comparison allows for their rounding, and for Asterisk's lead-in).

Run with ``pytest -m slow tests/telephony/test_asterisk.py`` as root.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.telephony import peers
from tests.telephony.conftest import FakeRegistry, wait_registered
from voxgate.audio.g711 import ulaw_decode_float, ulaw_encode
from voxgate.telephony.agent import AgentOptions, PbxConfig, SipAgent

SCRIPT = peers.REPO / "scripts" / "telephony-asterisk.sh"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _script(*args: str, timeout: float = 1500) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.asyncio
async def test_asterisk_originates_a_call_that_plays_a_recording(speech_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the Asterisk chroot needs root")
    await asyncio.to_thread(_script, "build")
    pcm = peers.speech_8k(speech_dir, "3080", 8.0)
    recording = tmp_path / "recording.wav"
    sf.write(recording, pcm, 8000, subtype="PCM_16")
    port = peers.free_udp_port()
    _script("configure", str(port), peers.USER, peers.PASSWORD, str(recording), timeout=60)
    with (tmp_path / "asterisk.log").open("w") as log:
        asterisk = subprocess.Popen(
            ["bash", str(SCRIPT), "start"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    registry = FakeRegistry()
    low, high = peers.free_port_range(16)
    config = PbxConfig(
        id="asterisk",
        host="127.0.0.1",
        port=port,
        username=peers.USER,
        password=peers.PASSWORD,
        expires_s=120,
        rtp_port_min=low,
        rtp_port_max=high,
        local_host="127.0.0.1",
    )
    agent = SipAgent(config, registry, AgentOptions(rtp_timeout_s=10))
    try:
        await asyncio.sleep(5)  # Asterisk loads its modules
        await agent.start()
        await wait_registered(agent, timeout_s=60)
        version = _script("rx", "core show version", timeout=30)
        _script("call", peers.USER, timeout=30)
        await registry.wait_closed(1, timeout_s=60)
    finally:
        await agent.stop()
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60, check=False)
        try:
            asterisk.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(asterisk.pid, 9)
            asterisk.wait(timeout=10)
        subprocess.run(["bash", str(SCRIPT), "umount"], capture_output=True, timeout=60, check=False)
    assert "Asterisk 22" in version, version
    (stream,) = registry.streams.values()
    assert stream.reason == "call_ended" and stream.info["pbx"] == "asterisk"
    received = stream.audio
    sent = pcm.astype(np.float32) / 32768
    assert received.size >= 0.95 * sent.size, received.size
    # align (Asterisk may skip or pad a little at the start) and compare what overlaps
    head = 4000
    window = received[: head + 8000]
    lag = int(np.argmax(np.correlate(window, sent[head : head + 4000], mode="valid"))) - head
    start_sent, start_received = max(0, -lag), max(0, lag)
    n = min(sent.size - start_sent, received.size - start_received)
    assert n >= 0.95 * sent.size, (lag, n)
    reference, part = sent[start_sent : start_sent + n], received[start_received : start_received + n]
    snr_db = 10 * np.log10(np.sum(reference**2) / max(float(np.sum((part - reference) ** 2)), 1e-12))
    # Asterisk encoded the WAV to G.711 itself: against our own µ-law round trip of the same samples
    g711 = ulaw_decode_float(ulaw_encode(pcm))[start_sent : start_sent + n]
    exact = float(np.mean(part == g711))
    print(f"Asterisk call: lag {lag} samples, {n} compared, SNR {snr_db:.1f} dB, {exact:.2%} equal to G.711")
    assert snr_db > 30, (lag, snr_db)
    assert exact > 0.99, exact  # measured: 100 % (Asterisk 22.10.1, PCMU)
    assert not agent.dialogs and not agent.ports.in_use
