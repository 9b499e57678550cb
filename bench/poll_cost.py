"""Server CPU per verify poll: what one ``POST /api/v2/verify`` on a live stream costs the server.

``bench/density.py`` finds how many streams a server sustains; at its 2 polls per second per stream, the
request path is a large share of the fastest profile's budget (80 streams: 160 polls a second). This
isolates it: a real ``voxgate serve`` (pinned to one core) gets one HTTP stream of real speech, enrolled,
then ``--polls`` verify requests one after another on a keep-alive connection; the server's CPU time
(user + system, from /proc, the supervisor and any workers) over those polls, divided by their number, is
the figure. CPU time, not wall time: another process on the machine moves it little. ``--code`` measures
another checkout (e.g. a ``git worktree`` of an older commit) with this script, so two commits can be
compared in one sitting.

    .venv/bin/python bench/poll_cost.py                                   # this checkout, embedded store
    .venv/bin/python bench/poll_cost.py --redis                           # shared live state in Redis
    .venv/bin/python bench/poll_cost.py --code /tmp/before --fastest      # an older checkout
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import density
from front_door import speech_pcm


async def _polls(port: int, token: str, uuid: str, n: int) -> list[float]:
    http = density.RawHttp(port, token)
    latencies: list[float] = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            status, body = await http.post_json("/api/v2/verify", {"uuid": uuid, "external_id": "bench"})
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"verify answered {status}: {body}")
    finally:
        http.close()
    return latencies


def measure(server: density.Server, polls: int, rounds: int) -> list[float]:
    """CPU ms per poll, one figure per round (after one warm-up round)."""
    login = httpx.post(
        server.base + "/rest-auth/login/", json={"username": "admin", "password": density.PASSWORD}
    )
    token = login.json()["key"]
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=60) as client:
        uuid = client.post("/api/v2/stream/HTTP", json={"frequency": 8000}).json()["uuid"]
        data = speech_pcm("3080", 20)
        client.post(f"/api/v2/stream/HTTP/data/{uuid}", content=data).raise_for_status()
        client.post("/api/v2/enroll", json={"uuid": uuid, "external_id": "bench"}).raise_for_status()
    asyncio.run(_polls(server.port, token, uuid, polls))  # warm-up
    figures = []
    for _ in range(rounds):
        before = server.cpu_s()
        latencies = asyncio.run(_polls(server.port, token, uuid, polls))
        figures.append((server.cpu_s() - before) * 1000 / polls)
        print(
            f"  {figures[-1]:.2f} CPU ms per poll (latency median {statistics.median(latencies) * 1000:.2f} ms)",
            flush=True,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=1000, help="verify requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fastest", action="store_true", help="CAM++ only (VOXGATE_MODELS=campplus)")
    parser.add_argument("--redis", action="store_true", help="shared live state in a throwaway Redis")
    parser.add_argument("--code", type=Path, default=density.ROOT, help="a checkout of voxgate to measure")
    parser.add_argument("--core", type=int, default=0, help="the core the server is pinned to")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.code.resolve())}
    if args.fastest:
        env.update(density.FASTEST_ENV)
    redis = None
    if args.redis:
        sys.path.insert(0, str(density.ROOT))
        from tests.redis_server import RedisServer, ensure_installed

        redis = RedisServer.start(ensure_installed())
    try:
        if redis is not None:
            env["VOXGATE_REDIS_URL"] = redis.url()
        server = density.start_server(args.core, env, cwd=args.code.resolve())
        try:
            print(f"{args.code}: {'fastest' if args.fastest else 'default'}, redis={bool(redis)}", flush=True)
            figures = measure(server, args.polls, args.rounds)
        finally:
            server.stop()
    finally:
        if redis is not None:
            redis.stop()
    print(f"median {statistics.median(figures):.2f} CPU ms per verify poll ({args.rounds} rounds of {args.polls})")


if __name__ == "__main__":
    main()
