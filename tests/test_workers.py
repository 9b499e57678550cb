"""`voxgate serve --workers N`: refused without Redis; with it, N processes (nodes) behind one port that
answer for each other's streams."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_end_to_end import _speech
from tests.nodes import REPO, Node, cluster_env, start_node
from tests.postgres import PostgresServer

PASSWORD = "workers-test-password"


def test_more_than_one_worker_without_redis_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env.update(VOXGATE_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "voxgate", "serve", "--port", "0", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "2 workers need VOXGATE_REDIS_URL" in done.stderr
    env["VOXGATE_WORKERS"] = "3"
    done = subprocess.run(
        [sys.executable, "-m", "voxgate", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "VOXGATE_WORKERS above 1 needs VOXGATE_REDIS_URL" in done.stderr


@pytest.fixture
def two_workers(
    postgres_server: PostgresServer, redis_url: str, model_dir: Path, tmp_path: Path
) -> Iterator[Node]:
    name = f"workers_{int(time.time() * 1000) % 10**9}"
    url = postgres_server.create_database(name)
    env = cluster_env(url, redis_url, model_dir, PASSWORD)
    env["VOXGATE_NODE_URL"] = (
        "http://127.0.0.1:9"  # the box's host; each worker forwards to a port of its own
    )
    env["VOXGATE_METRICS_PORT"] = "0"  # one metrics port for the box
    box = start_node("box", tmp_path / "box", env, args=("--workers", "2"))
    try:
        yield box
    finally:
        box.stop()
        assert box.process.returncode == 0, box.log()
        postgres_server.drop_database(name)


def test_two_workers_share_one_port_and_answer_for_each_others_streams(
    two_workers: Node, speech_dir: Path
) -> None:
    base = two_workers.url
    deadline = time.monotonic() + 90
    while len(status(base)["nodes"]) < 2:  # the second worker may still be loading its models
        assert time.monotonic() < deadline, two_workers.log()
        time.sleep(0.5)
    assert sorted(status(base)["nodes"]) == ["box-0", "box-1"]
    token = login(base)
    owners: dict[str, str] = {}
    for _ in range(12):  # a new connection each time, a call every 0.2 s
        opened = httpx.post(f"{base}/api/v2/stream/HTTP", json={"info": {"callid": "w"}}, headers=token)
        assert opened.status_code == 201, opened.text
        owners[opened.json()["uuid"]] = opened.headers["X-Voxgate-Node"]
        time.sleep(0.2)
    split = sorted(list(owners.values()).count(node) for node in ("box-0", "box-1"))
    # the kernel alone split 40 connections 27 / 13; the worker with more streams stops accepting
    assert split[1] - split[0] <= 2, f"streams per worker {split}"
    data = (_speech(speech_dir, "3080", slice(0, 3)) * 32767).astype("<i2").tobytes()
    uuids = list(owners)
    for uuid in {node: uuid for uuid, node in owners.items()}.values():  # one stream of each worker
        fed = httpx.post(f"{base}/api/v2/stream/HTTP/data/{uuid}", content=data, headers=token, timeout=120)
        assert fed.status_code == 200 and fed.headers["X-Voxgate-Node"] == owners[uuid], fed.text
        for _ in range(4):
            verified = httpx.post(
                f"{base}/api/v2/enroll", json={"uuid": uuid, "external_id": f"c-{uuid}"}, headers=token
            )
            assert verified.status_code in (201, 409) and verified.headers["X-Voxgate-Node"] == owners[uuid]
    listed = httpx.get(f"{base}/api/v2/streams", headers=token).json()["streams"]
    assert {s["uuid"] for s in listed} >= set(uuids)

    metrics = re.search(r"voxgate: metrics on (\S+)", two_workers.log())
    assert metrics is not None, two_workers.log()
    scraped = httpx.get(metrics.group(1)).text
    exists = re.search(r'^voxgate_enrollments_total\{result="exists",source="stream"\} (\S+)', scraped, re.M)
    assert exists is not None and float(exists.group(1)) == 6, "the metrics port sums both workers' 3 + 3"

    # kill -9 worker 1: its streams end (node_lost), the supervisor starts it again under the same name
    pids = re.search(r"voxgate: 2 workers \(pids (\d+), (\d+)\)", two_workers.log())
    assert pids is not None
    lost = [uuid for uuid, node in owners.items() if node == "box-1"]
    os.kill(int(pids.group(2)), signal.SIGKILL)
    deadline = time.monotonic() + 15
    while set(lost) & {
        s["uuid"] for s in httpx.get(f"{base}/api/v2/streams", headers=token).json()["streams"]
    }:
        assert time.monotonic() < deadline, "the killed worker's streams are still listed"
        time.sleep(0.2)
    deadline = time.monotonic() + 5  # written by the first node whose heartbeat notices
    while not (stops := stop_events(base, token, lost[0])):
        assert time.monotonic() < deadline, "no stream_stop event for the killed worker's stream"
        time.sleep(0.2)
    assert [e["outcome"] for e in stops] == ["node_lost"]
    deadline = time.monotonic() + 120
    while "restarting it" not in two_workers.log() or sorted(status(base)["nodes"]) != ["box-0", "box-1"]:
        assert time.monotonic() < deadline, two_workers.log()
        time.sleep(0.5)


def stop_events(base: str, token: dict[str, str], uuid: str) -> list[dict[str, Any]]:
    params = {"type": "stream_stop", "stream": uuid}
    found: list[dict[str, Any]] = httpx.get(f"{base}/api/v2/logging", params=params, headers=token).json()[
        "events"
    ]
    return found


def login(base: str) -> dict[str, str]:
    key = httpx.post(f"{base}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}).json()[
        "key"
    ]
    return {"Authorization": f"Token {key}"}


def status(base: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{base}/api/v2/status", headers=login(base)).json()
    return found
