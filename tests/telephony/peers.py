"""Real SIP peers for the telephony tests: Kamailio (registrar + record-routing proxy) and sipp (callers).

Both are Debian packages (``kamailio``, ``sip-tester``); ``scripts/telephony-peers.sh`` installs them when
they are missing. Everything listens on 127.0.0.1, on ports picked free for each run, and every process
started here is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from voxgate.audio.g711 import alaw_encode, ulaw_encode
from voxgate.telephony.rtp import RtpPacket, encode_rtp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KAMAILIO_CFG = HERE / "kamailio.cfg"
CALL_XML = HERE / "call.xml"
INSTALL = REPO / "scripts" / "telephony-peers.sh"
USER = "voxgate"
PASSWORD = "s3cret-for-tests"
FRAME = 160  # 20 ms at 8 kHz

Int16Array = npt.NDArray[np.int16]


def ensure_peers() -> None:
    """Install kamailio and sipp with the project's script when they are missing (CI runs as root)."""
    if shutil.which("kamailio") is None or shutil.which("sipp") is None:
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=900)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_range(count: int) -> tuple[int, int]:
    """A range of ``count`` consecutive UDP ports that are free now (for RTP)."""
    rng = np.random.default_rng()
    for _ in range(50):
        low = int(rng.integers(20000, 60000 - count)) & ~1
        sockets = []
        try:
            for port in range(low, low + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return low, low + count - 1
    raise RuntimeError("no free UDP port range")


# -- audio ---------------------------------------------------------------------------------------------


def speech_8k(speech_dir: Path, speaker: str, seconds: float, *, skip: int = 0) -> Int16Array:
    """About ``seconds`` of a LibriSpeech speaker's recordings (longest first, ``skip`` of them left out)
    at 8 kHz, int16, cut to whole 20 ms frames."""
    paths = sorted(
        (speech_dir / "librispeech_test_other" / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration
    )[skip:]
    pieces: list[npt.NDArray[np.float32]] = []
    total = 0
    for path in paths:
        samples, rate = sf.read(path, dtype="float32")
        audio = soxr.resample(samples, rate, 8000).astype(np.float32)
        pieces.append(audio)
        total += audio.size
        if total >= seconds * 8000:
            break
    audio = np.concatenate(pieces)[: int(seconds * 8000)]
    audio = audio[: audio.size // FRAME * FRAME]
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def encode(codec: str, pcm: Int16Array) -> npt.NDArray[np.uint8]:
    return ulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)


def rtp_packets(codes: npt.NDArray[np.uint8], payload_type: int, *, ssrc: int = 0x1234ABCD) -> list[bytes]:
    seq0, ts0 = 4321, 160_000
    return [
        encode_rtp(
            RtpPacket(
                payload_type,
                (seq0 + i) & 0xFFFF,
                (ts0 + i * FRAME) & 0xFFFFFFFF,
                ssrc,
                i == 0,
                codes[i * FRAME : (i + 1) * FRAME].tobytes(),
            )
        )
        for i in range(codes.size // FRAME)
    ]


def write_pcap(path: Path, packets: list[bytes], *, interval_s: float = 0.02) -> None:
    """RTP packets as an Ethernet/IPv4/UDP capture, one every ``interval_s`` (what sipp replays)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, payload in enumerate(packets):
        udp = struct.pack("!HHHH", 40000, 6000, 8 + len(payload), 0) + payload
        total = 20 + len(udp)
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, total, i & 0xFFFF, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
        )
        checksum = _ip_checksum(header)
        ip = header[:10] + struct.pack("!H", checksum) + header[12:]
        frame = b"\0\0\0\0\0\2" + b"\0\0\0\0\0\1" + b"\x08\x00" + ip + udp
        t = i * interval_s
        out.append(struct.pack("<IIII", int(t), round((t % 1) * 1e6) % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


def _ip_checksum(header: bytes) -> int:
    words: tuple[int, ...] = struct.unpack("!10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- Kamailio -------------------------------------------------------------------------------------------


@dataclass
class Kamailio:
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def kamailio(workdir: Path, *, sha256: bool = False) -> Iterator[Kamailio]:
    """Kamailio in the foreground on a free loopback port; stopped (its whole process group) afterwards."""
    ensure_peers()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    log_path = workdir / "kamailio.log"
    args = [
        "kamailio", "-DD", "-E", "-f", str(KAMAILIO_CFG), "-l", f"udp:127.0.0.1:{port}",
        "-Y", str(workdir), "-w", str(workdir), "-m", "32", "-M", "4",
        "-A", f'VOXGATE_USER="{USER}"', "-A", f'VOXGATE_PASSWORD="{PASSWORD}"',
    ]  # fmt: skip
    if sha256:
        args += ["-A", "WITH_SHA256"]
    with log_path.open("w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_for_sip(port, process, log_path)
        yield Kamailio(port, log_path)
    finally:
        _stop(process)


def _wait_for_sip(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the proxy answers an OPTIONS."""
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        local = s.getsockname()[1]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("kamailio exited:\n" + log_path.read_text()[-3000:])
            probe = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKprobe"
                f"{time.monotonic_ns()}\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                "Call-ID: probe@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(probe.encode(), ("127.0.0.1", port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 200"):
                    return
            except TimeoutError:
                continue
    raise RuntimeError("kamailio did not answer:\n" + log_path.read_text()[-3000:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (kamailio forks workers), SIGKILL if that is not enough."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# -- sipp -----------------------------------------------------------------------------------------------


def scenario(workdir: Path, pcap: Path, codec: str, caller: str) -> Path:
    """The call scenario with its pcap, codec and caller filled in."""
    payload_type = {"PCMU": "0", "PCMA": "8"}[codec]
    text = CALL_XML.read_text()
    for key, value in {
        "@PCAP@": str(pcap),
        "@PT@": payload_type,
        "@CODEC@": codec,
        "@CALLER@": caller,
    }.items():
        text = text.replace(key, value)
    path = workdir / f"call-{caller}-{codec}-{pcap.stem}.xml"
    path.write_text(text)
    return path


def sipp_command(
    scenario_path: Path,
    proxy: Kamailio,
    *,
    service: str = USER,
    call_id: str = "call-%u@voxgate-test",
    calls: int = 1,
    concurrent: int = 1,
    rate: float = 10,
    hold_ms: int = 1000,
    timeout_s: int = 120,
) -> list[str]:
    return [
        "sipp", proxy.address, "-sf", str(scenario_path), "-s", service,
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
        "-m", str(calls), "-l", str(concurrent), "-r", str(rate), "-d", str(hold_ms),
        "-cid_str", call_id, "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_err",
        "-max_recv_loops", "10000",
    ]  # fmt: skip
