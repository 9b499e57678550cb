"""Verify latency through the HTTP front door: HAProxy vs the owner node directly vs another node (forwarded).

Starts a local cluster (``deploy/local-cluster.sh``: PostgreSQL, Redis, 2 nodes, HAProxy; no Kamailio) in a
temporary folder, opens one HTTP stream through HAProxy, feeds it real speech, enrolls it, then sends
``POST /api/v2/verify`` for that stream one at a time, in turn: through HAProxy (its stick table sends it to
the owner), to the owner node directly, and to the other node directly (which forwards it to the owner).
Prints p50/p99 per path, then stops the cluster. Sequential requests on keep-alive connections: this is the
latency one poll adds, not a load test (bench/verify_load.py is that).

    PYTHONPATH=. .venv/bin/python bench/front_door.py --polls 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from voxgate.audio.resample import resample

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"
SPEECH = ROOT.parent / "shared" / "data" / "speech" / "librispeech_test_other"
PASSWORD = "front-door-bench"
HTTP_PORT, NODE_PORT, PG_PORT, REDIS_PORT = 18680, 18690, 18670, 18671


def speech_pcm(speaker: str, seconds: float) -> bytes:
    """A LibriSpeech speaker's longest recordings joined, 8 kHz s16le, cut to ``seconds``."""
    paths = sorted((SPEECH / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration)[:4]
    audio = np.concatenate([resample(sf.read(p, dtype="float32")[0], 16000, 8000) for p in paths])
    audio = audio[: int(seconds * 8000)]
    return bytes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=300, help="verify requests per path")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="voxgate-front-door-"))
    env = {
        **os.environ,
        "VOXGATE_CLUSTER_DIR": str(folder),
        "VOXGATE_CLUSTER_NODES": "2",
        "VOXGATE_CLUSTER_KAMAILIO": "0",
        "VOXGATE_CLUSTER_HTTP_PORT": str(HTTP_PORT),
        "VOXGATE_CLUSTER_NODE_PORT": str(NODE_PORT),
        "VOXGATE_CLUSTER_PG_PORT": str(PG_PORT),
        "VOXGATE_CLUSTER_REDIS_PORT": str(REDIS_PORT),
        "VOXGATE_PYTHON": sys.executable,
        "VOXGATE_ADMIN_PASSWORD": PASSWORD,
        "VOXGATE_LOG_LEVEL": "warning",
    }
    subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True)
    try:
        run(args.polls)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def run(polls: int) -> None:
    proxy = f"http://127.0.0.1:{HTTP_PORT}"
    login = httpx.post(
        f"{proxy}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}, timeout=30
    )
    headers = {"Authorization": f"Token {login.json()['key']}"}
    with httpx.Client(base_url=proxy, headers=headers, timeout=60) as client:
        opened = client.post("/api/v2/stream/HTTP", json={"frequency": 8000})
        stream, owner = opened.json()["uuid"], opened.headers["X-Voxgate-Node"]
        data = speech_pcm("3080", 40)
        for start in range(0, len(data), 96_000):
            client.post(
                f"/api/v2/stream/HTTP/data/{stream}", content=data[start : start + 96_000]
            ).raise_for_status()
        client.post("/api/v2/enroll", json={"uuid": stream, "external_id": "bench"}).raise_for_status()
    other = "node2" if owner == "node1" else "node1"
    paths = {
        "through HAProxy": proxy,
        f"owner ({owner}) directly": f"http://127.0.0.1:{NODE_PORT + int(owner[-1])}",
        f"other node ({other}), forwarded": f"http://127.0.0.1:{NODE_PORT + int(other[-1])}",
    }
    clients = {name: httpx.Client(base_url=url, headers=headers, timeout=60) for name, url in paths.items()}
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    body = {"uuid": stream, "external_id": "bench"}
    try:
        for _ in range(polls):
            for name, client in clients.items():
                started = time.perf_counter()
                answer = client.post("/api/v2/verify", json=body)
                latencies[name].append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200 and answer.headers["X-Voxgate-Node"] == owner, answer.text
    finally:
        for client in clients.values():
            client.close()
    print(f"verify latency, {polls} sequential polls per path, one stream (owner {owner}):")
    for name, values in latencies.items():
        print(f"  {name:<32} p50 {statistics.median(values):6.2f} ms   p99 {percentile(values, 99):6.2f} ms")


if __name__ == "__main__":
    main()
