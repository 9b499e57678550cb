"""Live verify latency while customers are enrolled from recordings: does a burst of imports starve calls?

A real ``voxgate serve`` (loopback, empty data directory, pinned to one core with ``taskset``) carries N live
WebSocket calls of real speech (20 ms µ-law frames in real time, ``POST /api/v2/verify`` twice a second per
call), first alone (window a), then while M concurrent ``POST /api/v2/import`` requests run (window b), each
one ~24-30 s recording of one LibriSpeech speaker (several of the speaker's files joined, 8 kHz µ-law WAV).
It prints verify latency p50/p99, the engine backlog (``GET /api/v2/status`` once a second), the import wall
times and every failed or timed-out request. See bench/README.md.

    .venv/bin/python bench/import_load.py                                  # 20 calls, 20 imports
    .venv/bin/python bench/import_load.py --server-tree ../other-checkout  # a server from another source tree
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuid_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

# helpers shared with the density benchmark: speech loading, call building, the server handle, raw HTTP
from density import FRAME, RawHttp, Server, Speaker, build_call, end_call, free_port, load_speakers, wav_ulaw

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "import-bench-1"
POLL_S = 0.5
SAMPLE_S = 1.0  # status sampling period
VERIFY_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 10.0
RECORDING_S = (24.0, 30.0)  # each import's recording
RATE_HZ = 8000


# -- results ---------------------------------------------------------------------------------------------


@dataclass
class Failures:
    """Every request that failed or timed out, by kind; a few messages kept as examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, what: str, at: float) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < 8:
            self.examples.append(f"{at:6.1f} s {kind}: {what}")

    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Load:
    t0: float
    stop_at: float = float("inf")  # seconds since t0; set when the measurement ends
    polls: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency s)
    failed_polls: list[float] = field(default_factory=list)  # sent at
    send_lag: list[tuple[float, float]] = field(
        default_factory=list
    )  # (at, s a frame left after its due time)
    samples: list[tuple[float, float, int, float]] = field(
        default_factory=list
    )  # (at, backlog, running, cpu)
    failures: Failures = field(default_factory=Failures)
    calls: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def stopping(self) -> bool:
        return self.now() >= self.stop_at


@dataclass
class ImportResult:
    external_id: str
    recording_s: float
    started: float
    wall_s: float
    status: int | None  # None: no response (timeout or connection error)
    error: str = ""


# -- the server ------------------------------------------------------------------------------------------


def start_server(python: str, tree: Path, core: int | None, env_extra: dict[str, str]) -> Server:
    """``python -m voxgate serve`` from the source tree ``tree`` (its cwd and first PYTHONPATH entry)."""
    data = Path(tempfile.mkdtemp(prefix="voxgate-import-bench-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]),
        VOXGATE_DATA_DIR=str(data),
        VOXGATE_ADMIN_PASSWORD=PASSWORD,
        VOXGATE_LOG_LEVEL="warning",
        VOXGATE_MAX_STREAMS="2000",
        VOXGATE_EVENT_RETENTION_DAYS="1",
    )
    env.update(env_extra)
    where = subprocess.run(
        [python, "-c", "import voxgate; print(voxgate.__file__)"],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"server runs voxgate from {Path(where).parent}", flush=True)
    pin = ["taskset", "-c", str(core)] if core is not None else []
    command = [*pin, python, "-m", "voxgate", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tree)
    server = Server(process, port, data)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((data / "server.log").read_text())
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.base + "/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError("the server did not start within 120 s")


def server_threads_niced(server: Server) -> int:
    """Threads of the server process running at a nice value above the process's own."""
    base = int(Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    niced = 0
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) > base:
                niced += 1
    return niced


# -- recordings ------------------------------------------------------------------------------------------


def import_recordings(
    speakers: Sequence[Speaker], n: int, rng: random.Random
) -> list[tuple[str, bytes, float]]:
    """``n`` recordings of 24-30 s, each a speaker's consecutive files joined (speakers in turn)."""
    recordings = []
    for i in range(n):
        speaker = speakers[i % len(speakers)]
        files = speaker.enroll + speaker.call
        target = rng.uniform(*RECORDING_S) * RATE_HZ
        pieces: list[np.ndarray] = []
        k = rng.randrange(len(files))
        while sum(p.size for p in pieces) < target:
            pieces.append(files[k % len(files)])
            k += 1
        audio = np.concatenate(pieces)[: int(target)]
        recordings.append((f"import-{i:02d}-{speaker.name}", wav_ulaw(audio), audio.size / RATE_HZ))
    return recordings


async def enroll(client: httpx.AsyncClient, external_id: str, wav: bytes) -> None:
    response = await client.post(
        "/api/v2/import",
        data={"external_id": external_id},
        files=[("files", (f"{external_id}.wav", wav, "audio/wav"))],
        timeout=300,
    )
    if response.status_code >= 400:
        raise RuntimeError(f"enrolling {external_id}: {response.status_code} {response.text}")


async def one_import(
    client: httpx.AsyncClient, load: Load, external_id: str, wav: bytes, recording_s: float, timeout_s: float
) -> ImportResult:
    started = load.now()
    try:
        response = await client.post(
            "/api/v2/import",
            data={"external_id": external_id},
            files=[("files", (f"{external_id}.wav", wav, "audio/wav"))],
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        load.failures.add("import", f"{external_id}: {type(exc).__name__} {exc}", started)
        return ImportResult(external_id, recording_s, started, load.now() - started, None, type(exc).__name__)
    result = ImportResult(external_id, recording_s, started, load.now() - started, response.status_code)
    if response.status_code != 201:
        result.error = response.text[:200]
        load.failures.add("import", f"{external_id}: {response.status_code} {result.error}", started)
    return result


# -- live calls ------------------------------------------------------------------------------------------


async def call(load: Load, port: int, token: str, audio: bytes, claimed: str) -> None:
    """One call: a WebSocket stream in real time, verify polled twice a second, until its audio or the run ends."""
    sid = "MZ" + uuid_module.uuid4().hex
    stream_uuid = str(uuid_module.uuid4())
    load.calls += 1
    try:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws?token={token}", max_queue=None, ping_interval=None, compression=None
        )
    except (OSError, websockets.WebSocketException) as exc:
        load.failures.add("websocket connect", str(exc), load.now())
        await asyncio.sleep(1.0)
        return
    async with ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        media = {"encoding": "audio/x-mulaw", "sampleRate": RATE_HZ, "channels": 1}
        start = {
            "accountSid": "",
            "streamSid": sid,
            "callSid": "",
            "tracks": ["inbound"],
            "mediaFormat": media,
            "customParameters": {"uuid": stream_uuid},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid}))
        closed: list[str] = []  # why the server hung up, if it did
        drain = asyncio.create_task(_drain(ws, load, closed))
        poller = asyncio.create_task(_poll(load, port, token, stream_uuid, claimed))
        n_frames = len(audio) // FRAME
        begin = time.monotonic()
        try:
            for i in range(n_frames):
                delay = begin + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif i % 50 == 0:  # once a second: how far behind real time the server's backpressure put us
                    load.send_lag.append((load.now(), -delay))
                if load.stopping:
                    break
                payload = base64.b64encode(audio[i * FRAME : (i + 1) * FRAME]).decode()
                await ws.send(
                    f'{{"event":"media","sequenceNumber":"{i + 2}","media":{{"track":"inbound","chunk":"{i + 1}",'
                    f'"timestamp":"{i * 20}","payload":"{payload}"}},"streamSid":"{sid}"}}'
                )
        except websockets.ConnectionClosed as exc:
            closed.append(str(exc))
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await end_call(ws, sid, n_frames, drain)
            if closed:
                load.failures.add("call dropped", closed[0], load.now())


async def _drain(ws: websockets.ClientConnection, load: Load, closed: list[str]) -> None:
    try:
        async for message in ws:
            reply = json.loads(message)
            status = reply.get("status")
            if isinstance(status, int) and status >= 400:
                load.failures.add(
                    "websocket reply", f"{reply.get('event')} {status} {reply.get('msg')}", load.now()
                )
    except websockets.ConnectionClosed as exc:
        if not load.stopping:
            closed.append(str(exc))


async def _poll(load: Load, port: int, token: str, stream_uuid: str, claimed: str) -> None:
    http = RawHttp(port, token)
    body = {"uuid": stream_uuid, "external_id": claimed}
    try:
        await asyncio.sleep(POLL_S)
        while True:
            sent = time.monotonic()
            at = sent - load.t0
            try:
                status, reply = await asyncio.wait_for(
                    http.post_json("/api/v2/verify", body), VERIFY_TIMEOUT_S
                )
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                http.close()  # a half-read reply: start a new connection
                load.failed_polls.append(at)
                load.failures.add("verify", f"{type(exc).__name__} {exc}", at)
            else:
                if status == 200:
                    load.polls.append((at, time.monotonic() - sent))
                else:
                    load.failed_polls.append(at)
                    load.failures.add("verify", f"{status} {reply.get('detail')}", at)
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - sent)))
    finally:
        http.close()


async def line(
    load: Load, server: Server, token: str, speakers: Sequence[Speaker], rng: random.Random, delay: float
) -> None:
    """One agent line: calls back to back (120-240 s each, half of them impostor claims) until the run ends."""
    await asyncio.sleep(delay)
    while not load.stopping:
        speaker = rng.choice(speakers)
        claimed = speaker if rng.random() < 0.5 else rng.choice([s for s in speakers if s is not speaker])
        audio, _ = build_call(speaker, rng.uniform(120.0, 240.0), rng)
        await call(load, server.port, token, audio, claimed.name)


async def monitor(load: Load, server: Server, token: str) -> None:
    async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Token {token}"}) as client:
        while not load.stopping:
            at = load.now()
            try:
                status = (
                    (await client.get("/api/v2/status", timeout=STATUS_TIMEOUT_S)).raise_for_status().json()
                )
            except httpx.HTTPError as exc:
                load.failures.add("status", f"{type(exc).__name__} {exc}", at)
            else:
                engine = status.get("engine") or {}
                load.samples.append(
                    (at, float(engine.get("backlog_s", 0.0)), int(status["running"]), server.cpu_s())
                )
            await asyncio.sleep(max(0.0, SAMPLE_S - (load.now() - at)))


# -- one run ---------------------------------------------------------------------------------------------


@dataclass
class Window:
    name: str
    start: float
    end: float
    polls: int
    failed_polls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    backlog_p50_s: float
    backlog_max_s: float
    backlog_end_s: float
    running: float
    server_cores: float
    send_lag_max_s: float


def window(load: Load, name: str, start: float, end: float) -> Window:
    latencies = [lat for at, lat in load.polls if start <= at < end]
    samples = [s for s in load.samples if start <= s[0] <= end]
    backlogs = [s[1] for s in samples]

    def ms(q: float) -> float:
        return float(np.percentile(latencies, q)) * 1000 if latencies else float("nan")

    cpu = (
        (samples[-1][3] - samples[0][3]) / (samples[-1][0] - samples[0][0])
        if len(samples) > 1
        else float("nan")
    )
    return Window(
        name=name,
        start=start,
        end=end,
        polls=len(latencies),
        failed_polls=sum(start <= at < end for at in load.failed_polls),
        p50_ms=ms(50),
        p99_ms=ms(99),
        max_ms=max(latencies) * 1000 if latencies else float("nan"),
        backlog_p50_s=statistics.median(backlogs) if backlogs else float("nan"),
        backlog_max_s=max(backlogs) if backlogs else float("nan"),
        backlog_end_s=backlogs[-1] if backlogs else float("nan"),
        running=statistics.median(s[2] for s in samples) if samples else float("nan"),
        server_cores=cpu,
        send_lag_max_s=max((lag for at, lag in load.send_lag if start <= at <= end), default=0.0),
    )


async def run(args: argparse.Namespace, server: Server, token: str, speakers: list[Speaker]) -> None:
    rng = random.Random(args.seed)
    headers = {"Authorization": f"Token {token}"}
    limits = httpx.Limits(max_connections=args.imports + 4, max_keepalive_connections=args.imports + 4)
    recordings = import_recordings(speakers, args.imports, rng)
    async with httpx.AsyncClient(base_url=server.base, headers=headers, limits=limits) as client:
        print(f"enrolling {len(speakers)} speakers for the calls' claims ...", flush=True)
        for speaker in speakers:
            await enroll(client, speaker.name, wav_ulaw(np.concatenate(speaker.enroll)))

        load = Load(time.monotonic())
        baseline_from = args.ramp + args.settle
        imports_from = baseline_from + args.baseline
        print(
            f"{args.streams} calls (ramp {args.ramp:g} s); window a from {baseline_from:g} s for {args.baseline:g} s; "
            f"{args.imports} imports at {imports_from:g} s",
            flush=True,
        )
        lines = [
            asyncio.create_task(
                line(load, server, token, speakers, random.Random(rng.random()), rng.uniform(0, args.ramp))
            )
            for _ in range(args.streams)
        ]
        watch = asyncio.create_task(monitor(load, server, token))
        await asyncio.sleep(imports_from)
        started = load.now()
        niced: list[int] = []

        async def watch_threads() -> None:
            while True:
                niced.append(server_threads_niced(server))
                await asyncio.sleep(2.0)

        thread_watch = asyncio.create_task(watch_threads())
        results = await asyncio.gather(
            *(
                one_import(client, load, eid, wav, seconds, args.import_timeout)
                for eid, wav, seconds in recordings
            )
        )
        thread_watch.cancel()
        imports_end = load.now()
        await asyncio.sleep(args.tail)
        load.stop_at = load.now()
        await asyncio.gather(*lines, watch, return_exceptions=True)

    a = window(load, f"a: {args.streams} calls, no imports", baseline_from, imports_from)
    b = window(load, f"b: {args.streams} calls + {args.imports} concurrent imports", started, imports_end)
    c = window(load, f"after the imports ({args.tail:g} s)", imports_end, load.stop_at)
    report(args, [a, b, c], results, load, max(niced, default=0))


def report(
    args: argparse.Namespace, windows: list[Window], results: list[ImportResult], load: Load, niced: int
) -> None:
    print()
    print(
        "| window | length s | calls running | verify polls | verify p50 / p99 / max ms | failed or timed-out polls "
        "| engine backlog_s p50 / max / end (per call at max) | calls behind real time, max s | server CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for w in windows:
        print(
            f"| {w.name} | {w.end - w.start:.0f} | {w.running:.0f} | {w.polls} | {w.p50_ms:.1f} / {w.p99_ms:.1f} / "
            f"{w.max_ms:.0f} | {w.failed_polls} | {w.backlog_p50_s:.2f} / {w.backlog_max_s:.2f} / {w.backlog_end_s:.2f} "
            f"({w.backlog_max_s / max(w.running, 1):.2f}) | {w.send_lag_max_s:.1f} | {w.server_cores:.2f} |"
        )
    ok = [r for r in results if r.status == 201]
    walls = sorted(r.wall_s for r in ok)
    audio_s = sum(r.recording_s for r in ok)
    print()
    if walls:
        span = max(r.started + r.wall_s for r in ok) - min(r.started for r in results)
        print(
            f"imports: {len(ok)}/{len(results)} succeeded; recordings {min(r.recording_s for r in ok):.1f}-"
            f"{max(r.recording_s for r in ok):.1f} s; wall time per import min {walls[0]:.1f} / median "
            f"{statistics.median(walls):.1f} / max {walls[-1]:.1f} s; all done after {span:.1f} s "
            f"({audio_s / span:.1f} s of audio per second)"
        )
    else:
        print(f"imports: none of {len(results)} succeeded")
    print(f"server threads seen at a raised nice value during the imports: {niced}")
    print(
        f"calls started: {load.calls}; failed or timed-out requests: {load.failures.total()} {load.failures.counts or ''}"
    )
    for example in load.failures.examples:
        print(f"  {example}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=20, help="concurrent live calls")
    parser.add_argument("--imports", type=int, default=20, help="concurrent POST /api/v2/import requests")
    parser.add_argument(
        "--ramp", type=float, default=20.0, help="calls start staggered over this many seconds"
    )
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the ramp before window a")
    parser.add_argument("--baseline", type=float, default=60.0, help="window a: seconds of calls alone")
    parser.add_argument("--import-timeout", type=float, default=300.0, help="client timeout of each import")
    parser.add_argument("--tail", type=float, default=15.0, help="seconds of calls after the last import")
    parser.add_argument(
        "--server-core", type=int, default=0, help="the server's core (taskset); -1: not pinned"
    )
    parser.add_argument("--load-core", type=int, default=1, help="this process's core; -1: not pinned")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    parser.add_argument(
        "--server-tree", type=Path, default=ROOT, help="source tree the server's voxgate is imported from"
    )
    parser.add_argument("--max-speech", type=float, default=60.0, help="VOXGATE_STREAM_MAX_SPEECH_S")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VOXGATE_X=value",
        help="more server settings (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    if args.load_core >= 0:
        os.sched_setaffinity(0, {args.load_core})
    env = {
        "VOXGATE_STREAM_MAX_SPEECH_S": str(args.max_speech),
        # the recordings are 24-30 s of read speech: a failure here should be load, not a short recording
        "VOXGATE_MIN_ENROLL_SPEECH_S": "10",
    }
    env.update(dict(item.split("=", 1) for item in args.env))
    print("loading speech ...", flush=True)
    speakers = load_speakers()
    server = start_server(
        args.python, args.server_tree.resolve(), args.server_core if args.server_core >= 0 else None, env
    )
    try:
        token = httpx.post(
            server.base + "/rest-auth/login/", json={"username": "admin", "password": PASSWORD}, timeout=30
        ).json()["key"]
        asyncio.run(run(args, server, token, speakers))
    finally:
        log = server.data / "server.log"
        errors = [
            ln for ln in log.read_text(errors="replace").splitlines() if "Traceback" in ln or "ERROR" in ln
        ]
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
    if errors:
        print(f"server log: {len(errors)} error lines, e.g. {errors[0][:200]}")


if __name__ == "__main__":
    main()
