"""The voice-bot flow's figures (issue 14): text-dependent accuracy of 1-utterance verify against a
3-utterance voiceprint, and the latency from the end of an utterance to the bot's event.

Accuracy (``--accuracy``, in process): each speaker of the short same-word sets is one call; their
recordings are its utterances, pushed into one live stream (``StreamSession``, the stages inline) with a
pause after each, and cut as a bot operation cuts them (a settle at the end of each, the utterance being
the stream's pooled sums now minus before). Each speaker's utterances in groups of 3 (manifest order) are
pooled into a text-dependent voiceprint; every other utterance of the set is a 1-utterance verify against
each group (the trials of docs/accuracy.md's text-dependent section), scored with the channel's
passphrase profile, as a verify of a text-dependent voiceprint is. Wideband: ``arabic_commands_3s`` at
16 kHz; telephone: the same through G.711 µ-law at 8 kHz (simulated channel) and ``fsdd_digits_3s_8k``
(native).

Latency (``--latency N``, a real ``voxgate serve`` on loopback): a scripted bot on one WebSocket enrolls a
text-dependent speaker from 3 FSDD utterances and verifies N times from 1; each utterance's frames are sent
at once and the engine given ``CATCH_UP_S`` to analyse them (as it would while a real caller speaks), then
``speakerVerificationEndOfUtterance``; the time from that message to the progress/completed event,
p50/p99. What it costs is mostly embedding the utterance's speech after the last chunk (the tail). With voxgate's own end-of-speech detection the configured silence
(``VOXGATE_BOT_END_OF_SPEECH_S``) and at most one 50 ms poll come on top.

    python bench/bot_flow.py --accuracy --latency 40
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from voxgate.audio.channel import telephone_channel
from voxgate.audio.g711 import ulaw_encode_float
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.metrics import eer
from voxgate.biometrics.profile import Verdict, resolve_profile
from voxgate.evaluation.datasets import read_dataset
from voxgate.settings import Settings
from voxgate.streams.session import StreamSession, StreamType
from voxgate.streams.stages import EMPTY, Pooled

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
GROUP = 3  # utterances per voiceprint
PAUSE_S = 1.0
RESET_VAD = os.environ.get("BOT_BENCH_RESET_VAD", "1") == "1"  # 0: the VAD state carried over (before)
CATCH_UP_S = 1.5  # the latency bench sends an utterance's frames at once, then lets the engine catch up


def utterances(biometrics: Biometrics, clips: list[np.ndarray], rate: int) -> list[Pooled | None]:
    """One call's utterances, cut as a bot operation cuts them; None for one with no embedded speech."""
    stream = StreamSession("bench", StreamType.WEBSOCKET, rate, {}, biometrics)
    pause = np.zeros(int(PAUSE_S * rate), dtype=np.float32)
    mark = stream.pipeline.pooled()
    found: list[Pooled | None] = []
    for samples in clips:
        stream.push(np.concatenate([samples, pause]))
        stream.pipeline.settle_inline(force=True)
        if RESET_VAD:
            stream.pipeline.reset_vad()  # as the operation does at each cut
        now = stream.pipeline.pooled()
        part = now - mark
        mark = now
        found.append(part if part.speech_s > 0 else None)
    return found


def accuracy(biometrics: Biometrics, name: str, channel: str) -> dict[str, Any]:
    dataset = read_dataset(SPEECH / name)
    by_speaker: dict[str, list[Path]] = {}
    for path, speaker in zip(dataset.files, dataset.speakers, strict=True):
        by_speaker.setdefault(speaker, []).append(path)
    tests: list[tuple[str, Pooled]] = []
    groups: list[tuple[str, set[int], Pooled]] = []
    converter = StreamSession("voiceprints", StreamType.WEBSOCKET, 16000, {}, biometrics).pipeline
    for speaker, paths in sorted(by_speaker.items()):
        clips = []
        rate = 0
        for path in paths:
            samples, rate = sf.read(path, dtype="float32")
            if channel == "telephone" and rate > 8000:
                samples, rate = telephone_channel(samples, rate)
            clips.append(np.asarray(samples, dtype=np.float32))
        cut = utterances(biometrics, clips, rate)
        first = len(tests)
        tests += [(speaker, part) for part in cut if part is not None]
        usable = list(range(first, len(tests)))
        for g in range(len(usable) // GROUP):
            members = usable[g * GROUP : (g + 1) * GROUP]
            pooled = sum((tests[i][1] for i in members), start=EMPTY)  # the operation's pool of 3
            groups.append((speaker, set(members), pooled))
    profile = resolve_profile(f"{channel}-passphrase")
    pairs = np.array(
        [
            (gi, ti)
            for gi, (_, members, _) in enumerate(groups)
            for ti in range(len(tests))
            if ti not in members
        ],
        dtype=np.int64,
    )
    enrolled = [converter.voiceprint_of(g[2]) for g in groups]
    llrs = profile.pair_llrs(enrolled, [converter.voiceprint_of(t[1]) for t in tests], pairs)
    target = np.array([groups[gi][0] == tests[ti][0] for gi, ti in pairs])
    verdicts = np.array([profile.thresholds.verdict(float(x)).value for x in llrs])
    tar, non = llrs[target], llrs[~target]
    return {
        "set": name,
        "channel": channel + (" (simulated)" if channel == "telephone" and "8k" not in name else ""),
        "target / non-target": f"{len(tar)} / {len(non)}",
        "EER %": round(100 * eer(tar, non), 2),
        "verified FA %": round(100 * float(np.mean(verdicts[~target] == Verdict.VERIFIED.value)), 2),
        "not_verified FR %": round(100 * float(np.mean(verdicts[target] == Verdict.NOT_VERIFIED.value)), 2),
        "not_sure tgt / non %": f"{100 * np.mean(verdicts[target] == Verdict.NOT_SURE.value):.1f} / "
        f"{100 * np.mean(verdicts[~target] == Verdict.NOT_SURE.value):.1f}",
    }


# -- latency through a real server ---------------------------------------------------------------------


async def latency(base: str, token: str, runs: int) -> dict[str, list[float]]:
    from websockets.asyncio.client import connect

    fsdd = SPEECH / "fsdd_digits_3s_8k"
    own = [sf.read(p, dtype="float32")[0] for p in sorted((fsdd / "george").glob("*.flac"))]
    sid = "MZ" + uuid.uuid4().hex
    found: dict[str, list[float]] = {"progress": [], "completed": []}
    async with connect(f"{base.replace('http', 'ws')}/ws/{token}", max_size=None) as ws:

        async def send(message: dict[str, Any]) -> None:
            await ws.send(json.dumps(message))

        async def event() -> dict[str, Any]:
            while True:
                message: dict[str, Any] = json.loads(await ws.recv())
                if message.get("type") == "event":
                    return message

        async def utterance(samples: np.ndarray) -> dict[str, Any]:
            codes = ulaw_encode_float(np.concatenate([samples, np.zeros(2400, np.float32)]))
            for i in range(0, len(codes), 160):
                media = {
                    "track": "inbound",
                    "payload": base64.b64encode(codes[i : i + 160].tobytes()).decode(),
                }
                await send({"event": "media", "media": media, "streamSid": sid})
            await asyncio.sleep(CATCH_UP_S)  # in a real call the frames came over the utterance's length
            sent = time.perf_counter()
            await send({"type": "event", "name": "speakerVerificationEndOfUtterance"})
            answer = await event()
            kind = "completed" if answer["name"].endswith("Completed") else "progress"
            found[kind].append(time.perf_counter() - sent)
            return answer

        await send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await ws.recv()
        fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        start = {"streamSid": sid, "mediaFormat": fmt, "customParameters": {"uuid": str(uuid.uuid4())}}
        await send({"event": "start", "start": start, "streamSid": sid})
        await ws.recv()
        await send(
            {"type": "event", "name": "config", "sessionParams": {"speakerVerificationEndOfSpeechSilence": 0}}
        )
        params = {"speakerVerificationSpeakerId": "bench", "speakerVerificationType": "text-dependent"}
        await send({"type": "event", "name": "speakerVerificationEnroll", "activityParams": params})
        for samples in own[:3]:
            await utterance(samples)
        for i in range(runs):
            await send({"type": "event", "name": "speakerVerificationVerify", "activityParams": params})
            await utterance(own[3 + i % (len(own) - 3)])
    return found


def serve() -> tuple[subprocess.Popen[bytes], str, str]:
    data = Path(tempfile.mkdtemp(prefix="voxgate-bench-"))
    password = uuid.uuid4().hex
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data),
        "VOXGATE_ADMIN_PASSWORD": password,
        "VOXGATE_LOG_LEVEL": "warning",
    }
    log = (data / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "serve", "--port", "0"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 120
    while not (
        found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", (data / "server.log").read_text())
    ):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError((data / "server.log").read_text())
        time.sleep(0.2)
    base = found.group(1)
    token = httpx.post(f"{base}/rest-auth/login/", json={"username": "admin", "password": password}).json()[
        "key"
    ]
    return process, base, str(token)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accuracy", action="store_true", help="text-dependent EER and verdict error rates")
    parser.add_argument(
        "--latency", type=int, default=0, metavar="N", help="N verifies through a real server"
    )
    args = parser.parse_args()
    if args.accuracy:
        biometrics = Biometrics(Settings().model_dir, ["ecapa", "campplus"])
        for name, channel in (
            ("arabic_commands_3s", "wideband"),
            ("arabic_commands_3s", "telephone"),
            ("fsdd_digits_3s_8k", "telephone"),
        ):
            started = time.perf_counter()
            row = accuracy(biometrics, name, channel)
            print(json.dumps(row), f"({time.perf_counter() - started:.0f} s)", flush=True)
    if args.latency:
        process, base, token = serve()
        try:
            found = asyncio.run(latency(base, token, args.latency))
        finally:
            process.terminate()
            process.wait(timeout=30)
        for kind, values in found.items():
            ms = np.array(values) * 1000
            print(
                f"end of utterance → {kind}: n={len(ms)} p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms"
            )


if __name__ == "__main__":
    main()
