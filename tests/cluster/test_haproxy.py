"""The HTTP/WebSocket front door: real HAProxy (deploy/haproxy/haproxy.cfg) in front of three real voxgate nodes
on one PostgreSQL, all started by deploy/local-cluster.sh.

- HTTP streams opened through the proxy: every request naming a stream (its data, enroll, verify polls,
  close) reaches the node that created it (HAProxy's own log says which node served each request), and the
  verdicts are right (same speaker ``verified``, impostor ``not_verified``);
- a WebSocket stream through the proxy (the upgrade passes); verify polls for it through the proxy and at
  every node answer the same (forwarded to the owner);
- a node killed with ``kill -9`` leaves HAProxy's pool within 5 s, the cluster keeps answering, and the
  node rejoins after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from tests.cluster.local_cluster import LocalCluster
from voxgate.audio.g711 import ulaw_encode_float
from voxgate.audio.resample import resample

LIBRI = "librispeech_test_other"
CUSTOMER = "cluster-customer"
FRAME = 160  # 20 ms at 8 kHz


def speech_8k(speech_dir: Path, speaker: str, files: slice) -> npt.NDArray[np.float32]:
    """A LibriSpeech speaker's recordings (longest first) joined, at 8 kHz like a phone call."""
    paths = sorted((speech_dir / LIBRI / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration)[files]
    assert paths
    return np.concatenate([resample(sf.read(p, dtype="float32")[0], 16000, 8000) for p in paths])


def pcm(samples: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[LocalCluster]:
    running = LocalCluster.start(tmp_path_factory.mktemp("cluster"), model_dir, nodes=3)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, headers=cluster.login(), timeout=120) as through_proxy:
        yield through_proxy


def open_http_stream(client: httpx.Client, samples: npt.NDArray[np.float32]) -> str:
    opened = client.post("/api/v2/stream/HTTP", json={"info": {"callid": "cluster"}, "frequency": 8000})
    assert opened.status_code == 201, opened.text
    stream = str(opened.json()["uuid"])
    assert opened.headers["X-Voxgate-Stream"] == stream  # what HAProxy's stick table learns
    data = pcm(samples)
    for start in range(0, len(data), 96_000):  # 6 s of audio per request
        sent = client.post(f"/api/v2/stream/HTTP/data/{stream}", content=data[start : start + 96_000])
        assert sent.status_code == 200, sent.text
    return stream


def served_by(cluster: LocalCluster, stream: str) -> dict[str, set[str]]:
    """Per request kind of ``stream`` (HAProxy's log): the nodes that served it."""
    nodes: dict[str, set[str]] = {}
    for line in cluster.proxy_log():
        if stream in (line.named, line.created):
            kind = "create" if line.created == stream else f"{line.method} {line.path.split('/')[3]}"
            nodes.setdefault(kind, set()).add(line.server)
    return nodes


@pytest.fixture(scope="module")
def customer(client: httpx.Client, speech_dir: Path) -> str:
    """A voiceprint enrolled from an HTTP stream opened through the proxy."""
    stream = open_http_stream(client, speech_8k(speech_dir, "3080", slice(0, 3)))
    enrolled = client.post("/api/v2/enroll", json={"uuid": stream, "external_id": CUSTOMER})
    assert enrolled.status_code == 201, enrolled.text
    assert client.delete(f"/api/v2/stream/HTTP/{stream}").status_code == 200
    return stream


def test_http_streams_stay_on_their_owner(
    cluster: LocalCluster, client: httpx.Client, customer: str, speech_dir: Path
) -> None:
    same = open_http_stream(client, speech_8k(speech_dir, "3080", slice(3, 6)))
    other = open_http_stream(client, speech_8k(speech_dir, "2609", slice(0, 2)))
    verdicts: dict[str, list[str]] = {same: [], other: []}
    for _poll in range(3):
        for stream in (same, other):
            polled = client.post("/api/v2/verify", json={"uuid": stream, "external_id": CUSTOMER})
            assert polled.status_code == 200, polled.text
            verdicts[stream].append(polled.json()["result"])
            if "X-Voxgate-Node" in polled.headers:  # the owner, once nodes name themselves
                assert polled.headers["X-Voxgate-Node"] == served_by(cluster, stream)["create"].pop()
    assert verdicts == {same: ["verified"] * 3, other: ["not_verified"] * 3}
    for stream in (same, other):
        assert client.delete(f"/api/v2/stream/HTTP/{stream}").status_code == 200

    owners = set()
    for stream in (customer, same, other):
        kinds = served_by(cluster, stream)
        assert kinds.keys() >= {"create", "POST stream", "POST verify", "DELETE stream"} or stream == customer
        (owner,) = kinds["create"]
        owners.add(owner)
        assert all(nodes == {owner} for nodes in kinds.values()), f"{stream}: {kinds}"
    # leastconn spreads the openings: several nodes own streams (else the test above proves nothing)
    assert len(owners) >= 2, owners


async def websocket_call(cluster: LocalCluster, speech: npt.NDArray[np.float32], stream: str) -> None:
    """A Twilio Media Streams call through the proxy: connect, start, 20 ms media frames, no stop."""
    codes = ulaw_encode_float(speech)
    headers = cluster.login()
    ws_url = cluster.url.replace("http://", "ws://") + "/ws"
    async with connect(ws_url, additional_headers=headers, open_timeout=20) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        assert json.loads(await ws.recv())["status"] == 200
        sid = "MZ" + uuid.uuid4().hex
        start = {
            "event": "start",
            "start": {
                "streamSid": sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"uuid": stream, "callid": "cluster-ws"},
            },
            "streamSid": sid,
        }
        await ws.send(json.dumps(start))
        assert json.loads(await ws.recv())["status"] == 201
        for i in range(0, codes.size, FRAME):
            payload = base64.b64encode(codes[i : i + FRAME].tobytes()).decode()
            await ws.send(json.dumps({"event": "media", "media": {"payload": payload}, "streamSid": sid}))
            if i % (FRAME * 50) == 0:
                await asyncio.sleep(0.25)  # 1 s of audio every 0.25 s: 4x real time
        await asyncio.sleep(3)  # keep the call up while the test polls (the node drains its backlog)


def test_websocket_stream_through_the_proxy(
    cluster: LocalCluster, client: httpx.Client, customer: str, speech_dir: Path
) -> None:
    stream = str(uuid.uuid4())
    speech = speech_8k(speech_dir, "3080", slice(3, 4))[: 12 * 8000]

    async def call_and_poll() -> tuple[list[httpx.Response], list[httpx.Response]]:
        call = asyncio.create_task(websocket_call(cluster, speech, stream))
        await asyncio.sleep(4.5)  # 12 s of speech sent at 4x real time
        body = {"uuid": stream, "external_id": CUSTOMER}
        async with httpx.AsyncClient(headers=client.headers, timeout=60) as polls:
            through_proxy = [
                await polls.post(f"{cluster.url}/api/v2/verify", json=body) for _poll in range(2)
            ]
            at_each_node = [
                await polls.post(f"{cluster.node_url(k)}/api/v2/verify", json=body)
                for k in range(1, cluster.nodes + 1)
            ]
        await call
        return through_proxy, at_each_node

    through_proxy, at_each_node = asyncio.run(call_and_poll())
    # the upgrade went through the proxy; every node answers for the call (forwarded to its owner)
    owners = set()
    for answer in through_proxy + at_each_node:
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == "verified", answer.text
        owners.add(answer.headers["X-Voxgate-Node"])
    assert len(owners) == 1, owners


def test_a_dead_node_leaves_the_pool_and_rejoins(cluster: LocalCluster, client: httpx.Client) -> None:
    assert cluster.servers_up() == {"node1": True, "node2": True, "node3": True}
    status = cluster.run("status")
    for part in ("postgres", "redis", "node1", "node2", "node3", "haproxy"):
        assert f"{part}: running" in status, status
    assert all(f"node{k}: 2" in status for k in (1, 2, 3)), status  # HAProxy's view: all up
    cluster.kill("node2")
    gone_s = cluster.wait("node2 marked down", lambda: not cluster.servers_up()["node2"], timeout_s=5)
    print(f"HAProxy took node2 out {gone_s:.2f} s after kill -9")
    with pytest.raises(RuntimeError, match="node2: DEAD"):  # status exits 1 and names the dead part
        cluster.run("status")
    for _ in range(6):  # whatever the balance would have picked, the live nodes answer
        assert client.get("/api/v2/status").status_code == 200
    assert all(line.server in ("node1", "node3") for line in cluster.proxy_log()[-6:])

    cluster.run("start-node", "2", timeout_s=300)
    back_s = cluster.wait("node2 back", lambda: cluster.servers_up()["node2"], timeout_s=10)
    print(f"node2 back in the pool {back_s:.2f} s after it answered /health")
