"""Verify under load: ``POST /api/v2/verify`` latency at a fixed request rate over live streams (issue 13).

A real ``voxgate serve`` (loopback, empty data directory, pinned to one core with ``taskset``) carries N live
WebSocket calls of real speech (20 ms µ-law frames in real time, as bench/density.py plays them). Once every
call holds the minimum verify speech (``VOXGATE_MIN_VERIFY_SPEECH_S``, 3 s of net speech), this process
sends ``POST /api/v2/verify`` at a fixed total rate, spread evenly over the calls, for a window. The load is
open-loop: each request has a due time on the clock, whatever the previous answers did, and its latency
runs from that due time, so a slow server shows up as latency rather than as fewer requests (at most
``--max-in-flight`` requests are on the wire; the rest wait for a connection, their wait counted). Every
scheduled request is counted: answered, failed or timed out. See bench/README.md.

    .venv/bin/python bench/verify_load.py                                   # 200 verify/s over 20 calls, 60 s
    .venv/bin/python bench/verify_load.py --streams 3 --rate 30 --seconds 10  # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import time
import uuid as uuid_module
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import numpy as np
import websockets

# helpers shared with the density and import benchmarks: speech, calls, the server, raw keep-alive HTTP,
# the load's bookkeeping (failures, status samples every second) and enrollment
from density import FRAME, RawHttp, Server, Speaker, build_call, end_call, load_speakers, wav_ulaw
from import_load import PASSWORD, Load, _drain, enroll, monitor, start_server

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ("verified", "not_sure", "not_verified", "not_enough_speech")


# -- the live calls ----------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One live call: the customer's audio, the claim its verifications make, and its readiness."""

    index: int
    speaker: str
    claimed: str
    audio: bytes
    uuid: str = field(default_factory=lambda: str(uuid_module.uuid4()))
    ready_at: float | None = None  # seconds since t0 when verify first had enough speech
    speech_s: float = 0.0

    @property
    def genuine(self) -> bool:
        return self.speaker == self.claimed


def make_streams(speakers: list[Speaker], n: int, length_s: float, rng: random.Random) -> list[Stream]:
    """N calls, speakers in a shuffled round; even calls claim their own speaker, odd ones another."""
    order = list(speakers)
    rng.shuffle(order)
    streams = []
    for i in range(n):
        speaker = order[i % len(order)]
        claimed = speaker if i % 2 == 0 else rng.choice([s for s in speakers if s is not speaker])
        audio, _ = build_call(speaker, length_s, rng)
        streams.append(Stream(i, speaker.name, claimed.name, audio))
    return streams


async def feed(load: Load, port: int, token: str, stream: Stream, delay: float) -> None:
    """One call on its own WebSocket connection: a 20 ms frame every 20 ms until its audio or the run ends."""
    await asyncio.sleep(delay)
    sid = "MZ" + uuid_module.uuid4().hex
    load.calls += 1
    try:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws?token={token}", max_queue=None, ping_interval=None, compression=None
        )
    except (OSError, websockets.WebSocketException) as exc:
        load.failures.add("websocket connect", str(exc), load.now())
        return
    async with ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "accountSid": "",
            "streamSid": sid,
            "callSid": "",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"uuid": stream.uuid},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid}))
        closed: list[str] = []
        drain = asyncio.create_task(_drain(ws, load, closed))
        n_frames = len(stream.audio) // FRAME
        begin = time.monotonic()
        try:
            for i in range(n_frames):
                delay = begin + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif i % 50 == 0:  # once a second: how far behind real time backpressure put the call
                    load.send_lag.append((load.now(), -delay))
                if load.stopping:
                    break
                payload = base64.b64encode(stream.audio[i * FRAME : (i + 1) * FRAME]).decode()
                await ws.send(
                    f'{{"event":"media","sequenceNumber":"{i + 2}","media":{{"track":"inbound","chunk":"{i + 1}",'
                    f'"timestamp":"{i * 20}","payload":"{payload}"}},"streamSid":"{sid}"}}'
                )
            if not load.stopping:
                load.failures.add("call audio ran out", stream.uuid, load.now())
        except websockets.ConnectionClosed as exc:
            closed.append(str(exc))
        finally:
            await end_call(ws, sid, n_frames, drain)
            if closed:
                load.failures.add("call dropped", closed[0], load.now())


async def wait_ready(load: Load, port: int, token: str, streams: list[Stream], timeout_s: float) -> bool:
    """Ask verify on each call not yet ready once a second until it has the minimum speech (or time is up)."""
    http = RawHttp(port, token)
    deadline = load.now() + timeout_s
    try:
        while load.now() < deadline:
            for stream in streams:
                if stream.ready_at is not None:
                    continue
                body = {"uuid": stream.uuid, "external_id": stream.claimed}
                try:
                    status, reply = await asyncio.wait_for(http.post_json("/api/v2/verify", body), 10.0)
                except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    http.close()
                    continue
                if status == 200 and reply.get("result") != "not_enough_speech":
                    stream.ready_at = load.now()
                    stream.speech_s = float(str(reply.get("speech_length", 0.0)))
            if all(s.ready_at is not None for s in streams):
                return True
            await asyncio.sleep(1.0)
        return False
    finally:
        http.close()


# -- the verify load ---------------------------------------------------------------------------------------


@dataclass
class Shot:
    """One scheduled verify request; times in seconds since t0."""

    due: float
    stream: Stream
    sent: float | None = None  # written to a connection
    answered: float | None = None
    status: int | None = None
    result: str = ""
    outcome: str = "pending"  # ok, failed (an error answer or a broken connection), timeout

    @property
    def latency_s(self) -> float:
        """Due time to answer; infinite unless answered 200, so a failure never makes the figure look better."""
        return self.answered - self.due if self.outcome == "ok" and self.answered is not None else math.inf


async def fire(load: Load, pool: asyncio.LifoQueue[RawHttp], shot: Shot, timeout_s: float) -> None:
    """One request: wait for a free connection, send, read; given up ``timeout_s`` after its due time."""

    async def attempt() -> None:
        http = await pool.get()
        finished = False
        try:
            if http.reader is not None and http.reader.at_eof():
                http.close()  # the server closed an idle keep-alive connection: open a new one
            shot.sent = load.now()
            status, reply = await http.post_json(
                "/api/v2/verify", {"uuid": shot.stream.uuid, "external_id": shot.stream.claimed}
            )
            finished = True
        finally:
            if not finished:
                http.close()  # a half-read answer: the connection starts afresh
            pool.put_nowait(http)
        shot.answered, shot.status = load.now(), status
        if status == 200:
            shot.outcome, shot.result = "ok", str(reply.get("result"))
        else:
            shot.outcome = "failed"
            load.failures.add("verify", f"{status} {reply.get('detail')}", shot.due)

    try:
        await asyncio.wait_for(attempt(), max(0.001, shot.due + timeout_s - load.now()))
    except TimeoutError:
        shot.outcome = "timeout"
        load.failures.add("verify timeout", f"no answer within {timeout_s:g} s", shot.due)
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        shot.outcome = "failed"
        load.failures.add("verify", f"{type(exc).__name__} {exc}", shot.due)


async def drive(
    load: Load, port: int, token: str, streams: list[Stream], start: float, args: argparse.Namespace
) -> list[Shot]:
    """``rate`` requests a second from ``start`` for ``seconds``, request k to stream k mod N (so each stream is
    asked every N / rate seconds); waits for the last answers (at most the timeout)."""
    pool: asyncio.LifoQueue[RawHttp] = asyncio.LifoQueue()
    for _ in range(args.max_in_flight):
        pool.put_nowait(RawHttp(port, token))
    shots: list[Shot] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for k in range(round(args.rate * args.seconds)):
            shot = Shot(start + k / args.rate, streams[k % len(streams)])
            delay = shot.due - load.now()
            if delay > 0:
                await asyncio.sleep(delay)
            shots.append(shot)
            tasks.append(asyncio.create_task(fire(load, pool, shot, args.timeout)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not pool.empty():
            pool.get_nowait().close()
    return shots


# -- one run -----------------------------------------------------------------------------------------------


@dataclass
class Window:
    start: float
    end: float
    server_cpu_s: float
    generator_cpu_s: float


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    args: argparse.Namespace, server: Server, token: str, speakers: list[Speaker]
) -> tuple[list[Stream], list[Shot], Load, Window] | None:
    rng = random.Random(args.seed)
    length_s = args.ramp + args.ready_timeout + args.seconds + args.timeout + 30.0
    streams = make_streams(speakers, args.streams, length_s, rng)
    async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Token {token}"}) as client:
        print(f"enrolling {len(speakers)} speakers for the calls' claims ...", flush=True)
        for speaker in speakers:
            await enroll(client, speaker.name, wav_ulaw(np.concatenate(speaker.enroll)))
        status = (await client.get("/api/v2/status", timeout=30)).json()
    profiles = {channel: (p or {}).get("name") for channel, p in status["profiles"].items()}
    print(f"models {[m['model_id'] for m in status['models']]}, profiles {profiles}", flush=True)

    load = Load(time.monotonic())
    calls = [
        asyncio.create_task(feed(load, server.port, token, s, rng.uniform(0, args.ramp))) for s in streams
    ]
    watch = asyncio.create_task(monitor(load, server, token))
    try:
        print(
            f"{len(streams)} calls started over {args.ramp:g} s; waiting (at most {args.ready_timeout:g} s) "
            "until each has the minimum verify speech ...",
            flush=True,
        )
        if not await wait_ready(load, server.port, token, streams, args.ramp + args.ready_timeout):
            late = sum(s.ready_at is None for s in streams)
            print(f"{late} of {len(streams)} calls never reached the minimum verify speech: no measurement")
            for example in load.failures.examples:
                print(f"  {example}")
            return None
        start = math.ceil(load.now()) + 1.0
        print(
            f"all ready after {max(s.ready_at or 0.0 for s in streams):.1f} s; {args.rate:g} verify/s for "
            f"{args.seconds:g} s from {start:.0f} s ...",
            flush=True,
        )
        await asyncio.sleep(start - load.now())
        cpu0, gen0 = server.cpu_s(), cpu_self()
        shots = await drive(load, server.port, token, streams, start, args)
        end = load.now()
        window = Window(start, end, server.cpu_s() - cpu0, cpu_self() - gen0)
    finally:
        load.stop_at = load.now()
        await asyncio.gather(*calls, watch, return_exceptions=True)
    return streams, shots, load, window


# -- the report --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: an actual value, so an unanswered request (infinite) shows as such."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def ms(value: float) -> str:
    return "unanswered" if math.isinf(value) else f"{value * 1000:.1f}"


def mix(shots: list[Shot]) -> str:
    counts = Counter(s.result for s in shots if s.outcome == "ok")
    total = sum(counts.values())
    if not total:
        return "no answers"
    names = [*VERDICTS, *sorted(set(counts) - set(VERDICTS))]
    return ", ".join(f"{name} {counts[name]} ({counts[name] / total:.0%})" for name in names if counts[name])


def report(
    args: argparse.Namespace, streams: list[Stream], shots: list[Shot], load: Load, window: Window
) -> None:
    length = window.end - window.start
    scheduled = len(shots)
    sent = sum(s.sent is not None for s in shots)
    answered = sum(s.answered is not None for s in shots)
    ok = sum(s.outcome == "ok" for s in shots)
    failed = sum(s.outcome == "failed" for s in shots)
    timed_out = sum(s.outcome == "timeout" for s in shots)
    latencies = sorted(s.latency_s for s in shots)
    lags = sorted((s.sent - s.due) for s in shots if s.sent is not None)
    samples = [s for s in load.samples if window.start <= s[0] <= window.end]
    backlogs = [s[1] for s in samples]
    running = statistics.median(s[2] for s in samples) if samples else math.nan
    behind = max((lag for at, lag in load.send_lag if window.start <= at <= window.end), default=0.0)
    ready = [s.ready_at or 0.0 for s in streams]
    rows = [
        ("live calls (streams running, median)", f"{len(streams)} ({running:.0f})"),
        (
            "window",
            f"{length:.1f} s, from {window.start:.0f} s (calls ready at {min(ready):.1f}-{max(ready):.1f} s)",
        ),
        ("verify requests scheduled / sent", f"{scheduled} / {sent}"),
        ("answered (any HTTP status) / 200", f"{answered} / {ok}"),
        ("failed (error status or broken connection)", str(failed)),
        (f"timed out (no answer {args.timeout:g} s after due)", str(timed_out)),
        (
            "rate asked / sent / answered 200",
            f"{args.rate:g} / {sent / length:.1f} / {ok / length:.1f} per s",
        ),
        (
            "verify latency p50 / p90 / p99 / max, ms",
            " / ".join(ms(percentile(latencies, q)) for q in (50, 90, 99, 100)),
        ),
        (
            "send lag (due → written) p99 / max, ms",
            f"{ms(percentile(lags, 99))} / {ms(lags[-1]) if lags else 'nan'}",
        ),
        ("verdicts, genuine claims", mix([s for s in shots if s.stream.genuine])),
        ("verdicts, impostor claims", mix([s for s in shots if not s.stream.genuine])),
        (
            "engine backlog_s p50 / max / end (per stream at max)",
            f"{statistics.median(backlogs):.2f} / {max(backlogs):.2f} / {backlogs[-1]:.2f} "
            f"({max(backlogs) / max(running, 1):.2f})"
            if backlogs
            else "no samples",
        ),
        ("calls behind real time, max", f"{behind:.2f} s"),
        ("server CPU", f"{window.server_cpu_s / length:.2f} cores"),
        ("load generator CPU", f"{window.generator_cpu_s / length:.0%} of its core"),
    ]
    print()
    print(
        f"| verify load: {args.rate:g}/s over {len(streams)} live calls, {args.seconds:g} s, seed {args.seed} "
        "| |"
    )
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()
    print(
        "latency runs from each request's due time to its answer; failed and timed-out requests count as "
        "unanswered (infinite) in the percentiles"
    )
    print(
        f"calls started: {load.calls}; failed or timed-out requests of any kind: {load.failures.total()} "
        f"{load.failures.counts or ''}"
    )
    for example in load.failures.examples:
        print(f"  {example}")


# -- main --------------------------------------------------------------------------------------------------


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the server as Ctrl-C does


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=20, help="live calls (WebSocket streams)")
    parser.add_argument("--rate", type=float, default=200.0, help="verify requests per second in all")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    parser.add_argument(
        "--ramp", type=float, default=5.0, help="calls start staggered over this many seconds"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=90.0,
        help="seconds after the ramp to wait for every call to hold the minimum verify speech",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="a request's timeout, from its due time")
    parser.add_argument("--max-in-flight", type=int, default=64, help="connections, so requests on the wire")
    parser.add_argument(
        "--server-core", type=int, default=0, help="the server's core (taskset); -1: not pinned"
    )
    parser.add_argument("--load-core", type=int, default=1, help="this process's core; -1: not pinned")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VOXGATE_X=value",
        help="more server settings, e.g. --env VOXGATE_INT8=true (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.streams < 1 or args.rate <= 0 or args.seconds <= 0 or args.max_in_flight < 1:
        parser.error("--streams, --rate, --seconds and --max-in-flight must be positive")

    signal.signal(signal.SIGTERM, interrupted)
    if args.load_core >= 0:
        os.sched_setaffinity(0, {args.load_core})
    env = dict(item.split("=", 1) for item in args.env)
    print("loading speech ...", flush=True)
    speakers = load_speakers()
    server = start_server(sys.executable, ROOT, args.server_core if args.server_core >= 0 else None, env)
    outcome = None
    try:
        token = httpx.post(
            server.base + "/rest-auth/login/", json={"username": "admin", "password": PASSWORD}, timeout=30
        ).json()["key"]
        outcome = asyncio.run(run(args, server, token, speakers))
    finally:
        log = server.data / "server.log"
        errors = [
            ln for ln in log.read_text(errors="replace").splitlines() if "Traceback" in ln or "ERROR" in ln
        ]
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
    if outcome is not None:
        report(args, *outcome)
    if errors:
        print(f"server log: {len(errors)} error lines, e.g. {errors[0][:200]}")
    return 0 if outcome is not None else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server was stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
