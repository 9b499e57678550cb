"""Live-call density: how many concurrent WebSocket streams one core sustains in real time.

A real ``voxgate serve`` runs pinned to one core (``taskset``); this process, pinned to the other core,
plays N staggered calls of real speech over the WebSocket door (20 ms µ-law frames, in real time) and
polls verify twice a second per stream over HTTP keep-alive. See bench/README.md for what is measured,
and how the load generator is shown not to be the bottleneck.

    .venv/bin/python bench/density.py --streams 40             # one probe of N = 40
    .venv/bin/python bench/density.py --streams 20 40 60       # several probes, one summary
    .venv/bin/python bench/density.py --streams 60 --fastest   # CAM++ only (VOXGATE_MODELS=campplus)
    .venv/bin/python bench/density.py --streams 60 --workers 2 # `serve --workers 2` on the whole box

With ``--workers N`` the server is ``voxgate serve --workers N`` (N processes behind one port, sharing live
state through a throwaway Redis from the Debian package ``redis-server``) and nothing is pinned: the workers
and this load generator share every core, and the figures are per box, not per core. Server CPU and memory
are summed over the supervisor and its workers; the backlog is summed over the stream list (every worker's
streams). A verify poll lands on whichever worker accepted its connection: about half are forwarded to the
stream's owner, as without a proxy that routes by stream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import io
import itertools
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import websockets

from voxgate.audio.g711 import ulaw_decode_float, ulaw_encode_float
from voxgate.audio.resample import resample
from voxgate.streams.threads import INFERENCE

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech" / "librispeech_test_other"
PASSWORD = "density-bench-1"
FRAME = 160  # 20 ms at 8 kHz
ENROLL_FILES = 5  # a speaker's first files make the voiceprint; the rest make the calls
POLL_S = 0.5
THREAD_KINDS = ("inference", "event loop", "other")  # Server.cpu_by_thread
FASTEST_ENV = {"VOXGATE_MODELS": "campplus", "VOXGATE_PROFILE": "telephone-campplus"}  # --fastest
NAIVE_CALLS = 3  # calls whose whole-buffer analysis is timed for the naive baseline


# -- calls ------------------------------------------------------------------------------------------------


@dataclass
class Speaker:
    name: str
    enroll: list[np.ndarray]  # 8 kHz float32
    call: list[np.ndarray]


def load_speakers() -> list[Speaker]:
    speakers = []
    for folder in sorted(p for p in SPEECH.iterdir() if p.is_dir()):
        files = []
        for path in sorted(folder.glob("*.flac")):
            samples, rate = sf.read(path, dtype="float32")
            files.append(resample(samples, rate, 8000).astype(np.float32))
        speakers.append(Speaker(folder.name, files[:ENROLL_FILES], files[ENROLL_FILES:]))
    return speakers


def telephone(samples: np.ndarray) -> bytes:
    """µ-law bytes, as the line carries them."""
    return bytes(ulaw_encode_float(np.clip(samples, -1.0, 1.0)))


def build_call(speaker: Speaker, length_s: float, rng: random.Random) -> tuple[bytes, float]:
    """The customer's side of a call: speech turns (the speaker's recordings, cut to 3-12 s) separated by
    silence of equal mean length (the agent talking, hold music muted), so about half the time is speech."""
    pieces: list[np.ndarray] = []
    total = spoken = 0
    target = int(length_s * 8000)
    i = rng.randrange(len(speaker.call))
    while total < target:
        recording = speaker.call[i % len(speaker.call)]
        i += 1
        turn = int(rng.uniform(3.0, 12.0) * 8000)
        start = rng.randrange(max(1, recording.size - turn))
        speech = recording[start : start + turn]
        gap = np.zeros(int(speech.size * rng.uniform(0.6, 1.4)), dtype=np.float32)
        gap += np.float32(1e-4) * np.random.default_rng(rng.randrange(1 << 30)).standard_normal(
            gap.size
        ).astype(np.float32)  # line noise, not digital silence
        pieces += [speech, gap]
        total += speech.size + gap.size
        spoken += speech.size
    audio = np.concatenate(pieces)[:target]
    return telephone(audio), spoken / total


def wav_ulaw(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="WAV", subtype="ULAW")
    return buffer.getvalue()


# -- the server ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a process's or thread's ``/proc/.../stat``."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server's process and its children (the workers of ``--workers``)."""
        found = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    found.append(int(stat.parent.name))
        return found

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += _cpu_s(Path(f"/proc/{pid}/stat"))
        return total

    def cpu_by_thread(self) -> dict[str, float]:
        """CPU seconds of the server's threads by kind: the inference engines (the OS thread name
        ``voxgate.streams.threads.INFERENCE``), the event loops (each process's main thread), the rest."""
        kinds = dict.fromkeys(THREAD_KINDS, 0.0)
        for pid in self.pids():
            for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    name = (task / "comm").read_text().strip()
                    kind = "inference" if name == INFERENCE else "event loop" if task.name == str(pid) else "other"
                    kinds[kind] += _cpu_s(task / "stat")
        return kinds

    def rss_mib(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        return total or float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.data, ignore_errors=True)


def start_server(
    core: int, env_extra: dict[str, str], workers: int | None = None, cwd: Path = ROOT
) -> Server:
    """``voxgate serve`` of the checkout ``cwd`` (this one by default), pinned to ``core`` unless it runs
    ``workers``; returns once it (and every worker) answers."""
    data = Path(tempfile.mkdtemp(prefix="voxgate-density-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        VOXGATE_DATA_DIR=str(data),
        VOXGATE_ADMIN_PASSWORD=PASSWORD,
        VOXGATE_LOG_LEVEL="warning",
        VOXGATE_MAX_STREAMS="2000",
        VOXGATE_EVENT_RETENTION_DAYS="1",
    )
    env.update(env_extra)
    log = (data / "server.log").open("wb")
    command = [sys.executable, "-m", "voxgate", "serve", "--port", str(port)]
    if workers is None:
        command = ["taskset", "-c", str(core), *command]
    else:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    server = Server(process, port, data)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((data / "server.log").read_text())
        try:
            if httpx.get(server.base + "/health", timeout=2).status_code == 200 and _all_workers(server, workers):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError("the server did not start within 120 s")


def _all_workers(server: Server, workers: int | None) -> bool:
    """Every worker has joined (one heartbeat each), or there are no workers."""
    if workers is None:
        return True
    token = httpx.post(server.base + "/rest-auth/login/", json={"username": "admin", "password": PASSWORD}).json()
    status = httpx.get(server.base + "/api/v2/status", headers={"Authorization": f"Token {token['key']}"}).json()
    return len(status["nodes"]) >= workers


# -- load ------------------------------------------------------------------------------------------------


@dataclass
class Poll:
    at: float  # seconds since the probe started
    latency_s: float
    result: str
    score: float | None
    forwarded: bool = False  # answered by the owner through another worker (X-Voxgate-Forwarded-By)


@dataclass
class CallRecord:
    stream_uuid: str
    speaker: str
    claimed: str
    audio: bytes
    turns_fraction: float  # share of the call's time filled by the speaker's recordings
    started: float = 0.0
    ended: float | None = None
    sent_frames: int = 0
    polls: list[Poll] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class RawHttp:
    """A keep-alive HTTP/1.1 connection for the verify polls: httpx costs about a millisecond of CPU per
    request, which at hundreds of polls a second would make the load generator the bottleneck."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.forwarded = False  # the last answer came through another worker

    async def post_json(self, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        self.forwarded = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "x-voxgate-forwarded-by":
                self.forwarded = True
        data = await self.reader.readexactly(length)
        return status, json.loads(data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


PollPort = Callable[[str], Awaitable[int]]  # a stream's uuid → the port its verify polls go to


async def run_call(
    call: CallRecord, port: int, token: str, t0: float, stop_at: float, poll_port: PollPort | None = None
) -> None:
    """One call: a WebSocket connection with one stream, frames every 20 ms, verify every 0.5 s."""
    sid = "MZ" + uuid_module.uuid4().hex  # 34 characters, as Twilio's
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    n_frames = len(call.audio) // FRAME
    async with websockets.connect(url, max_queue=None, ping_interval=None, compression=None) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "",
                "streamSid": sid,
                "callSid": "",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"uuid": call.stream_uuid},
            },
            "streamSid": sid,
        }
        await ws.send(json.dumps(start))
        drain = asyncio.create_task(_drain(ws, call))
        poller = asyncio.create_task(_poll(call, port, token, t0, poll_port))
        begin = time.monotonic()
        call.started = begin - t0
        try:
            await _send_frames(ws, call, sid, n_frames, begin, t0, stop_at)
        except websockets.ConnectionClosed as exc:  # the server hung up: the probe fails, not the bench
            call.errors.append(f"connection closed while sending: {exc}")
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await end_call(ws, sid, n_frames, drain)
            call.ended = time.monotonic() - t0


async def end_call(
    ws: websockets.ClientConnection, sid: str, n_frames: int, drain: asyncio.Task[None]
) -> None:
    """The end of a call: a `stop` if the server still listens, 0.2 s for its answer, then stop reading."""
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(n_frames + 2), "streamSid": sid}))
        await asyncio.sleep(0.2)
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)


async def _send_frames(
    ws: websockets.ClientConnection,
    call: CallRecord,
    sid: str,
    n_frames: int,
    begin: float,
    t0: float,
    stop_at: float,
) -> None:
    """A 20 ms µ-law frame every 20 ms, on the wall clock, until the call's audio ends or the probe does."""
    for i in range(n_frames):
        due = begin + i * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic() - t0 > stop_at:
            break
        payload = base64.b64encode(call.audio[i * FRAME : (i + 1) * FRAME]).decode()
        await ws.send(
            f'{{"event":"media","sequenceNumber":"{i + 2}","media":{{"track":"inbound","chunk":"{i + 1}",'
            f'"timestamp":"{i * 20}","payload":"{payload}"}},"streamSid":"{sid}"}}'
        )
        call.sent_frames += 1


async def _drain(ws: websockets.ClientConnection, call: CallRecord) -> None:
    try:
        async for message in ws:
            reply = json.loads(message)
            status = reply.get("status")
            if isinstance(status, int) and status >= 400:
                call.errors.append(f"{reply.get('event')} {status} {reply.get('msg')}")
    except websockets.ConnectionClosed as exc:
        call.errors.append(f"connection closed: {exc}")


async def _poll(call: CallRecord, port: int, token: str, t0: float, poll_port: PollPort | None) -> None:
    await asyncio.sleep(POLL_S)
    http = RawHttp(await poll_port(call.stream_uuid) if poll_port is not None else port, token)
    try:
        while True:
            sent = time.monotonic()
            status, body = await http.post_json(
                "/api/v2/verify", {"uuid": call.stream_uuid, "external_id": call.claimed}
            )
            latency = time.monotonic() - sent
            if status != 200:
                call.errors.append(f"verify {status} {body.get('detail')}")
            else:
                score = body.get("score")
                call.polls.append(
                    Poll(
                        sent - t0,
                        latency,
                        str(body["result"]),
                        float(str(score)) if score is not None else None,
                        http.forwarded,
                    )
                )
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - sent)))
    finally:
        http.close()


@dataclass
class Sample:
    at: float
    server_cpu_s: float
    by_thread: dict[str, float]  # Server.cpu_by_thread
    rss_mib: float
    backlog_s: float
    running: int
    per_worker: tuple[int, ...] = ()  # with --workers: live streams per worker, most first


async def monitor(
    server: Server, token: str, t0: float, until: float, samples: list[Sample], *, workers: bool = False
) -> None:
    async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Token {token}"}) as client:
        while time.monotonic() - t0 < until:
            status = (await client.get("/api/v2/status", timeout=10)).json()
            engine = status.get("engine") or {}
            backlog = float(engine.get("backlog_s", 0.0))
            per_worker: tuple[int, ...] = ()
            if workers:  # the status holds one worker's engine: sum every stream's backlog instead
                listed = (await client.get("/api/v2/streams", timeout=10)).json()["streams"]
                backlog = sum(float(s["backlog_s"]) for s in listed)
                owners = collections.Counter(str(s.get("node")) for s in listed)
                per_worker = tuple(sorted(owners.values(), reverse=True))
            samples.append(
                Sample(
                    time.monotonic() - t0,
                    server.cpu_s(),
                    server.cpu_by_thread(),
                    server.rss_mib(),
                    backlog,
                    int(status["running"]),
                    per_worker,
                )
            )
            await asyncio.sleep(5.0)


# -- one probe -------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    streams: int
    ok: bool
    why: str
    cpu_ms_per_stream_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    mib_per_stream: float
    backlog_end_s: float
    backlog_max_s: float
    generator_cpu: float
    polls: int
    calls: list[CallRecord]
    speech_fraction: float
    per_worker: tuple[int, ...] = ()  # live streams per worker when the most were running
    thread_ms_per_stream_s: dict[str, float] = field(default_factory=dict)  # THREAD_KINDS
    latency_by_route: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # polls, p50, p99 ms


async def probe(
    server: Server,
    token: str,
    speakers: list[Speaker],
    n: int,
    *,
    ramp_s: float,
    window_s: float,
    call_s: tuple[float, float],
    seed: int,
    workers: bool = False,
    poll_port: PollPort | None = None,
) -> ProbeResult:
    rng = random.Random(seed)
    idle_rss = server.rss_mib()
    t0 = time.monotonic()
    end = ramp_s + window_s
    calls: list[CallRecord] = []
    samples: list[Sample] = []
    usage0 = resource.getrusage(resource.RUSAGE_SELF)

    def new_call() -> CallRecord:
        speaker = rng.choice(speakers)
        claimed = speaker if rng.random() < 0.5 else rng.choice([s for s in speakers if s is not speaker])
        audio, turns = build_call(speaker, rng.uniform(*call_s), rng)
        record = CallRecord(str(uuid_module.uuid4()), speaker.name, claimed.name, audio, turns)
        calls.append(record)
        return record

    async def line(first_delay: float) -> None:
        """One agent line: calls back to back for the whole probe (a new call as soon as one ends)."""
        await asyncio.sleep(first_delay)
        while time.monotonic() - t0 < end:
            await run_call(new_call(), server.port, token, t0, end, poll_port)

    monitor_task = asyncio.create_task(monitor(server, token, t0, end, samples, workers=workers))
    await asyncio.gather(*(line(rng.uniform(0, ramp_s)) for _ in range(n)))
    await monitor_task
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    generator_cpu = (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / wall

    window = [s for s in samples if s.at >= ramp_s]
    if len(window) < 2:
        raise RuntimeError("the measurement window holds fewer than two samples: lengthen --window")
    stream_s = sum((b.at - a.at) * (a.running + b.running) / 2 for a, b in itertools.pairwise(window))
    cpu = window[-1].server_cpu_s - window[0].server_cpu_s
    latencies = sorted(p.latency_s for c in calls for p in c.polls if p.at >= ramp_s)
    by_route = {
        route: [p.latency_s for c in calls for p in c.polls if p.at >= ramp_s and p.forwarded == forwarded]
        for route, forwarded in (("direct", False), ("forwarded", True))
    }
    errors = [e for c in calls for e in c.errors]
    # the engine's backlog is the sum over streams (each holds up to a feed batch and a cycle's wait
    # even when the engine keeps up): judge how far behind the average stream is
    behind = [s.backlog_s / max(s.running, 1) for s in window]
    backlog_end = behind[-1]
    backlog_max = max(behind)
    last_third = behind[len(behind) * 2 // 3 :]
    p99 = float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan")
    why = []
    if p99 >= 100:
        why.append(f"p99 {p99:.0f} ms")
    if max(last_third) > 1.0:
        why.append(f"backlog {max(last_third):.1f} s per stream")
    if errors:
        why.append(f"{len(errors)} errors, e.g. {errors[0]}")
    rss = statistics.median(s.rss_mib for s in window)
    running = statistics.median(s.running for s in window)
    return ProbeResult(
        streams=n,
        ok=not why,
        why="; ".join(why) or "sustained",
        cpu_ms_per_stream_s=1000 * cpu / stream_s if stream_s else float("nan"),
        latency_p50_ms=float(np.percentile(latencies, 50)) * 1000 if latencies else float("nan"),
        latency_p99_ms=p99,
        mib_per_stream=(rss - idle_rss) / running if running else float("nan"),
        backlog_end_s=backlog_end,
        backlog_max_s=backlog_max,
        generator_cpu=generator_cpu,
        polls=len(latencies),
        calls=calls,
        speech_fraction=statistics.mean(c.turns_fraction for c in calls),
        per_worker=max(window, key=lambda s: s.running).per_worker,
        latency_by_route={
            route: (len(found), float(np.percentile(found, 50)) * 1000, float(np.percentile(found, 99)) * 1000)
            for route, found in by_route.items()
            if found
        },
        thread_ms_per_stream_s={
            kind: 1000 * (window[-1].by_thread[kind] - window[0].by_thread[kind]) / stream_s if stream_s else float("nan")
            for kind in THREAD_KINDS
        },
    )


# -- offline comparison and the naive baseline --------------------------------------------------------------


def offline_agreement(
    calls: list[CallRecord], speakers: list[Speaker], env: dict[str, str], limit: int, cap_s: float | None
) -> tuple[float, int, float, float]:
    """Verdict of each finished call's last poll vs the offline verdict of the same audio; also the naive
    baseline's CPU per stream-second (re-embedding the whole buffer on every poll, measured here)."""
    from voxgate.audio.types import Audio
    from voxgate.biometrics.profile import resolve_profile
    from voxgate.service.models import load_biometrics
    from voxgate.settings import Settings

    os.environ.update(env)
    settings = Settings()
    biometrics = load_biometrics(settings)  # the server's engine for these settings (models, int8, VAD)
    profile = resolve_profile(settings.profile, 8000)
    enrolled = {}
    for speaker in speakers:
        audio = np.concatenate([ulaw_decode_float(telephone(x)) for x in speaker.enroll])
        analysis = biometrics.analyse(Audio(audio.astype(np.float32), 8000, 1, "ULAW", "wav"))
        enrolled[speaker.name] = biometrics.voiceprint(analysis, min_speech_s=1.0)
    finished = [c for c in calls if c.ended is not None and c.polls and c.polls[-1].score is not None]
    agree = total = 0
    naive_costs: list[float] = []
    net: list[float] = []
    for call in finished[:limit]:
        sent = call.audio[: call.sent_frames * FRAME]
        audio = ulaw_decode_float(sent)
        analysis = biometrics.analyse(Audio(audio, 8000, 1, "ULAW", "raw"))
        net.append(analysis.speech_s / analysis.duration_s)
        try:
            voiceprint = biometrics.voiceprint(analysis, min_speech_s=1.0, max_speech_s=cap_s)
        except Exception:
            continue
        offline = profile.score(enrolled[call.claimed], voiceprint).verdict.value
        total += 1
        agree += offline == call.polls[-1].result
        if len(naive_costs) >= NAIVE_CALLS:
            continue
        # naive: every poll re-runs VAD and the networks over the whole buffer so far; at a poll at
        # time t that costs about cost(whole call) * t / T, so the mean poll costs half the whole call
        started = time.process_time()
        whole = biometrics.analyse(Audio(audio, 8000, 1, "ULAW", "raw"))
        biometrics.voiceprint(whole, min_speech_s=0.0)
        whole_cost = time.process_time() - started
        naive_costs.append((whole_cost / 2) * (1 / POLL_S))  # CPU s per stream-second
    naive = statistics.median(naive_costs) if naive_costs else float("nan")
    return (
        (agree / total if total else float("nan")),
        total,
        naive,
        statistics.mean(net) if net else float("nan"),
    )


# -- main ------------------------------------------------------------------------------------------------


def find_largest(first: int, max_probes: int, run: Callable[[int], ProbeResult]) -> Iterator[ProbeResult]:
    """Probe N upward until one fails, then bisect between the largest pass and the smallest failure.

    The next N is guided by the CPU-bound ceiling the last passing probe measured (90 % of it), so a good
    first guess needs two or three probes; it stops when the gap is within 5 % (or one stream).
    """
    passed, failed = 0, 0
    n = first
    for _ in range(max_probes):
        result = run(n)
        yield result
        if result.ok:
            passed = max(passed, n)
            upward = max(int(0.9 * 1000.0 / result.cpu_ms_per_stream_s), n + max(1, n // 4))
        else:
            failed = min(failed, n) if failed else n
        if failed and failed - passed <= max(1, int(0.05 * failed)):
            return
        middle = (passed + failed) // 2
        if not failed:
            n_next = upward
        elif not passed:
            n_next = max(1, n * 2 // 3)
        else:
            n_next = min(upward, middle) if result.ok else middle
        if n_next in (passed, failed):
            return
        n = n_next


def measure(
    n: int, args: argparse.Namespace, env: dict[str, str], speakers: list[Speaker], config: str
) -> ProbeResult:
    """One probe of N calls on a fresh server, then the offline agreement and the naive baseline; prints it."""
    code = args.code.resolve()
    server = start_server(args.server_core, {**env, "PYTHONPATH": str(code)}, args.workers, cwd=code)
    try:
        token = httpx.post(
            server.base + "/rest-auth/login/", json={"username": "admin", "password": PASSWORD}
        ).json()["key"]
        headers = {"Authorization": f"Token {token}"}
        for speaker in speakers:
            files = [
                ("files", (f"{speaker.name}.wav", wav_ulaw(np.concatenate(speaker.enroll)), "audio/wav"))
            ]
            response = httpx.post(
                server.base + "/api/v2/import",
                data={"external_id": speaker.name},
                files=files,
                headers=headers,
                timeout=300,
            )
            if response.status_code >= 400:
                raise RuntimeError(f"import {speaker.name}: {response.status_code} {response.text}")
        status = httpx.get(server.base + "/api/v2/status", headers=headers).json()
        where = f"{args.workers} workers, unpinned" if args.workers else f"server on core {args.server_core}"
        print(f"[{config}] N={n}: {where}, models {[m['model_id'] for m in status['models']]}", flush=True)
        result = asyncio.run(
            probe(
                server,
                token,
                speakers,
                n,
                ramp_s=args.ramp,
                window_s=args.window,
                call_s=(args.call_min, args.call_max),
                seed=args.seed + n,
                workers=args.workers is not None,
                poll_port=owner_port(args.route_polls, server.port),
            )
        )
        leaked = -1
        for _ in range(30):  # calls that ended last may still be handing over their queued audio
            leaked = len(httpx.get(server.base + "/api/v2/streams", headers=headers).json()["streams"])
            if leaked == 0:
                break
            time.sleep(1.0)
    finally:
        server.stop()
    pin(args, {args.server_core})  # the offline pass and the naive baseline: the server's core
    agreement, scored, naive, net_speech = offline_agreement(
        result.calls, speakers, env, args.offline_calls, args.max_speech
    )
    pin(args, {args.load_core})
    naive_streams = 1.0 / naive if naive == naive and naive > 0 else float("nan")
    ours_streams = 1000.0 / result.cpu_ms_per_stream_s
    print(
        f"[{config}] N={n}: {'OK' if result.ok else 'FAILED'} ({result.why})\n"
        f"  streams per {'box' if args.workers else 'core'} sustained: {n if result.ok else 'fewer than ' + str(n)}"
        f" (CPU-bound ceiling {ours_streams:.0f} at {result.cpu_ms_per_stream_s:.2f} CPU ms per stream-second)\n"
        f"  verify latency p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms "
        f"({result.polls} polls in the window)\n"
        f"  memory per stream {result.mib_per_stream:.2f} MiB; backlog per stream end {result.backlog_end_s:.2f} s, "
        f"max {result.backlog_max_s:.2f} s; leaked streams {leaked}\n"
        f"  verdict agreement with offline scoring: {agreement:.1%} of {scored} finished calls\n"
        f"  naive baseline (re-embed the whole buffer per poll): {naive * 1000:.0f} CPU ms per "
        f"stream-second = {naive_streams:.2f} streams per core; incremental is "
        f"{naive * 1000 / result.cpu_ms_per_stream_s:.0f}x cheaper\n"
        f"  load generator used {result.generator_cpu:.0%} of its core\n"
        + (f"  streams per worker (most running): {' / '.join(map(str, result.per_worker))}\n" if args.workers else "")
        + "".join(
            f"  {route} polls: {polls}, p50 {p50:.1f} ms, p99 {p99:.1f} ms\n"
            for route, (polls, p50, p99) in result.latency_by_route.items()
            if args.workers
        )
        + "  server CPU ms per stream-second by thread: "
        + ", ".join(f"{kind} {ms:.2f}" for kind, ms in result.thread_ms_per_stream_s.items())
        + "\n"
        + f"  calls: {len(result.calls)}, recordings fill {result.speech_fraction:.0%} of call time, "
        f"net speech (VAD) {net_speech:.0%}",
        flush=True,
    )
    return result


def owner_port(redis_url: str | None, default: int) -> PollPort | None:
    """With --route-polls: each stream's verify polls go straight to the worker that owns it (its internal
    port, from the stream registry in Redis), as a proxy routing by stream would; no poll is forwarded."""
    if redis_url is None:
        return None
    import redis.asyncio as aioredis

    from voxgate.service.shared import StreamEntry
    from voxgate.service.shared_redis import STREAMS, node_key

    client = aioredis.Redis.from_url(redis_url)

    async def port(stream_uuid: str) -> int:
        for _ in range(50):  # the owner writes the entry as the stream opens
            body = await client.hget(STREAMS, stream_uuid)
            if body is not None:
                entry = StreamEntry.from_json(body if isinstance(body, str) else body.decode())
                node = await client.get(node_key(entry.node))
                if node is not None:
                    return urllib.parse.urlsplit(json.loads(node)["url"]).port or default
            await asyncio.sleep(0.1)
        return default

    return port


def pin(args: argparse.Namespace, cores: set[int]) -> None:
    """Pin this process (not with --workers: the server and the load share the box)."""
    if args.workers is None:
        os.sched_setaffinity(0, cores)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", required=True, help="N concurrent calls per probe")
    parser.add_argument("--fastest", action="store_true", help="CAM++ only (telephone-campplus profile)")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument(
        "--ramp", type=float, default=60.0, help="calls start staggered over this many seconds"
    )
    parser.add_argument("--window", type=float, default=180.0, help="measured seconds after the ramp")
    parser.add_argument("--call-min", type=float, default=120.0)
    parser.add_argument("--call-max", type=float, default=240.0)
    parser.add_argument("--offline-calls", type=int, default=10, help="calls scored offline for agreement")
    parser.add_argument(
        "--max-speech",
        type=float,
        default=60.0,
        help="VOXGATE_STREAM_MAX_SPEECH_S of the server: net speech a stream's voiceprint grows to",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="run `voxgate serve --workers N` (with a throwaway Redis) and pin nothing: per-box figures",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout whose server is measured (default this one)"
    )
    parser.add_argument(
        "--find",
        action="store_true",
        help="search for the largest N, starting at the first --streams value",
    )
    parser.add_argument("--max-probes", type=int, default=5, help="probes --find may run")
    parser.add_argument(
        "--route-polls",
        action="store_true",
        help="with --workers: send each stream's verify polls to the worker that owns it (no forwarding)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VOXGATE_X=value",
        help="more server settings, e.g. --env VOXGATE_INT8=true (repeatable; named in the summary)",
    )
    args = parser.parse_args()

    pin(args, {args.load_core})
    env = {"VOXGATE_STREAM_MAX_SPEECH_S": str(args.max_speech)}
    redis = None
    if args.workers is not None:
        sys.path.insert(0, str(ROOT))
        from tests.redis_server import RedisServer, ensure_installed

        redis = RedisServer.start(ensure_installed())
        env["VOXGATE_REDIS_URL"] = redis.url()
    if args.route_polls and redis is None:
        parser.error("--route-polls needs --workers")
    args.route_polls = env["VOXGATE_REDIS_URL"] if args.route_polls else None
    if args.fastest:
        env.update(FASTEST_ENV)
    extra = dict(item.split("=", 1) for item in args.env)
    env.update(extra)
    models = "CAM++ only" if args.fastest else "ECAPA + CAM++ fused"
    named = "".join(f", {key}={value}" for key, value in extra.items())
    if args.workers is not None:
        named += f", {args.workers} workers unpinned" + (", polls routed to the owner" if args.route_polls else "")
    config = f"{'fastest' if args.fastest else 'default'} ({models}, speech cap {args.max_speech:g} s{named})"
    print(f"loading speech from {SPEECH.name} ...", flush=True)
    speakers = load_speakers()

    def run(n: int) -> ProbeResult:
        if redis is not None:
            redis.flush()  # each probe's server is a new cluster
        return measure(n, args, env, speakers, config)

    try:
        if args.find:
            results = list(find_largest(args.streams[0], args.max_probes, run))
        else:
            results = [run(n) for n in args.streams]
    finally:
        if redis is not None:
            redis.stop()
    sustained = [r.streams for r in results if r.ok]
    print(
        f"[{config}] largest N sustained: {max(sustained) if sustained else 'none of ' + str([r.streams for r in results])}"
    )


if __name__ == "__main__":
    main()
