"""Two (and for a while three) real `voxgate serve` nodes on one PostgreSQL and one Redis, on loopback.

A stream opened on node 1 is listed, fed, enrolled and verified through node 2 (forwarded to its owner);
a lock on one node refuses new streams on the other within a second; ``force_off`` ends the streams of
every node; a backup made on one node is restored through the other; a node killed with ``kill -9`` has
its streams shown ended within a few seconds, and nothing stored before the kill is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_end_to_end import _pcm, _speech
from tests.api.test_webhooks import Receiver, receiver  # noqa: F401  (a fixture)
from tests.api.test_websocket import client as ws_client
from tests.api.test_websocket import payloads
from tests.nodes import Node, cluster_env, start_node
from tests.postgres import PostgresServer
from tests.redis_server import RedisServer
from voxgate.audio.g711 import ulaw_encode_float

PASSWORD = "cluster-test-password"


@pytest.fixture(scope="module")
def shared_env(
    postgres_server: PostgresServer, redis_server: RedisServer, model_dir: Path
) -> Iterator[dict[str, str]]:
    redis_server.flush()
    name = f"cluster_{int(time.time() * 1000) % 10**9}"
    url = postgres_server.create_database(name)
    try:
        yield cluster_env(url, redis_server.url(), model_dir, PASSWORD)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def nodes(shared_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for name in ("node-1", "node-2"):  # one after the other: the first one migrates the database
            started.append(start_node(name, tmp_path_factory.mktemp(name), shared_env))
        yield started
    finally:
        for node in started:
            node.stop()


def client(node: Node) -> httpx.Client:
    login = httpx.post(f"{node.url}/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200, login.text
    return httpx.Client(
        base_url=node.url, timeout=120, headers={"Authorization": f"Token {login.json()['key']}"}
    )


def open_stream(http: httpx.Client, callid: str) -> str:
    opened = http.post("/api/v2/stream/HTTP", json={"info": {"callid": callid}, "frequency": 8000})
    assert opened.status_code == 201, opened.text
    uuid = str(opened.json()["uuid"])
    assert opened.headers["X-Voxgate-Stream"] == uuid
    return uuid


def feed(http: httpx.Client, uuid: str, samples: np.ndarray) -> httpx.Response:
    data = _pcm(samples)
    response = http.post(f"/api/v2/stream/HTTP/data/{uuid}", content=data)
    assert response.status_code == 200, response.text
    return response


def test_a_stream_on_node_1_is_listed_fed_enrolled_and_verified_through_node_2(
    nodes: list[Node], speech_dir: Path
) -> None:
    one, two = (client(n) for n in nodes)
    with one, two:
        enrolling = open_stream(one, "enroll-call")
        fed = feed(two, enrolling, _speech(speech_dir, "3080", slice(0, 3)))
        assert fed.headers["X-Voxgate-Node"] == "node-1", "the data went to the stream's owner"
        enrolled = two.post("/api/v2/enroll", json={"uuid": enrolling, "external_id": "customer-a"})
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.headers["X-Voxgate-Node"] == "node-1"

        same, other = open_stream(one, "same-call"), open_stream(one, "other-call")
        feed(two, same, _speech(speech_dir, "3080", slice(3, 6)))
        feed(two, other, _speech(speech_dir, "2609", slice(0, 2)))
        verdict_same = two.post("/api/v2/verify", json={"uuid": same, "external_id": "customer-a"})
        verdict_other = two.post("/api/v2/verify", json={"uuid": other, "external_id": "customer-a"})
        assert verdict_same.json()["result"] == "verified", verdict_same.text
        assert verdict_other.json()["result"] == "not_verified", verdict_other.text
        assert verdict_same.headers["X-Voxgate-Node"] == "node-1"
        assert verdict_same.headers["X-Voxgate-Forwarded-By"] == "node-2"

        time.sleep(1.2)  # one heartbeat: node 2 sees the owner's latest figures (last verdict)
        listed = {s["uuid"]: s for s in two.get("/api/v2/streams").json()["streams"]}
        assert {enrolling, same, other} <= set(listed)
        assert {listed[u]["node"] for u in (enrolling, same, other)} == {"node-1"}
        assert listed[same]["last_verdict"] == "verified" and listed[same]["speech_length"] > 5
        # the console's live feed: node 2 lists node 1's streams as published (no timeline), node 1 with it
        live_two = _live(two)
        assert live_two[same]["node"] == "node-1" and live_two[same]["last_verdict"] == "verified"
        assert live_two[same]["verdicts"] == []
        assert [p["verdict"] for p in _live(one)[same]["verdicts"]] == ["verified"]
        found = two.post("/api/v2/streams", json={"info": {"callid": "other-call"}}).json()["streams"]
        assert [s["uuid"] for s in found] == [other]
        status = two.get("/api/v2/status").json()
        assert status["running"] >= 3 and status["streams"]["HTTP"] >= 3
        assert status["node"] == "node-2" and sorted(status["nodes"]) == ["node-1", "node-2"]

        assert "X-Voxgate-Forwarded-By" not in one.post(
            "/api/v2/verify", json={"uuid": same, "external_id": "customer-a"}
        ).headers, "an answer from the owner itself was not forwarded"
        closed = two.delete(f"/api/v2/stream/HTTP/{same}")
        assert closed.status_code == 200 and closed.headers["X-Voxgate-Node"] == "node-1"
        assert two.post("/api/v2/verify", json={"uuid": same, "external_id": "customer-a"}).status_code == 404
        assert one.post("/api/v2/verify", json={"uuid": same, "external_id": "customer-a"}).status_code == 404
        for uuid in (enrolling, other):
            assert two.delete(f"/api/v2/stream/HTTP/{uuid}").status_code == 200


def _live(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """The running streams of the first event of the node's live feed, by uuid."""
    response = http.get("/api/v2/streams/live?duration_s=1")
    assert response.status_code == 200, response.text
    first = json.loads(response.text.split("\n\n")[0].split("data: ", 1)[1])
    return {s["uuid"]: s for s in first["running"]}


@pytest.mark.asyncio
async def test_a_websocket_stream_on_node_1_is_verified_through_node_2(
    nodes: list[Node], speech_dir: Path
) -> None:
    """HAProxy cannot stick a WebSocket stream's polls to its owner (the uuid is inside the connection):
    any node answers them, forwarded."""
    with client(nodes[0]) as one:
        token = one.headers["Authorization"]
    stream_uuid, stream_sid = str(uuid_module.uuid4()), "MZ" + uuid_module.uuid4().hex
    frames = payloads(ulaw_encode_float(_speech(speech_dir, "3080", slice(3, 5))))
    url = nodes[0].url.replace("http://", "ws://") + "/ws"
    async with (
        ws_client(url, {"Authorization": token}) as ws,
        httpx.AsyncClient(base_url=nodes[1].url, headers={"Authorization": token}, timeout=60) as two,
    ):
        await ws.handshake()
        assert (await ws.start(stream_sid, stream_uuid))["status"] == 201
        for frame in frames:
            await ws.media(stream_sid, frame)
        deadline = time.monotonic() + 60
        while True:
            polled = await two.post("/api/v2/verify", json={"uuid": stream_uuid, "external_id": "customer-a"})
            assert polled.status_code == 200 and polled.headers["X-Voxgate-Node"] == "node-1", polled.text
            if polled.json()["result"] == "verified":
                break
            assert time.monotonic() < deadline, polled.text
            await asyncio.sleep(0.5)
        assert (await ws.stop(stream_sid))["status"] == 204  # stopped


def test_a_webhook_subscribed_on_node_2_is_sent_once_a_tick_by_the_streams_owner(
    nodes: list[Node],
    speech_dir: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    one, two = (client(n) for n in nodes)
    with one, two:
        uuid = open_stream(one, "hooked-call")
        feed(two, uuid, _speech(speech_dir, "3080", slice(3, 5)))
        subscribed = two.post(
            "/api/v2/subscription",
            json={
                "channel_uuid": uuid,
                "webhook": f"{receiver.base}/ok/verify",
                "type": "verify",
                "info": {"external_id": "customer-a"},
            },
        )
        assert subscribed.status_code == 201, subscribed.text
        time.sleep(3.5)
        assert two.delete(f"/api/v2/stream/HTTP/{uuid}").status_code == 200
        calls = receiver.on("/ok/verify")
        assert 2 <= len(calls) <= 5, f"one callback a second from the owner alone, got {len(calls)} in 3.5 s"
        assert len({c.headers["x-voxgate-delivery"] for c in calls}) == len(calls)
        assert {c.json["payload"]["result"] for c in calls} == {"verified"}


def test_a_lock_on_node_1_refuses_new_streams_on_node_2_within_a_second(nodes: list[Node]) -> None:
    one, two = (client(n) for n in nodes)
    with one, two:
        try:
            assert one.get("/api/v2/lock").status_code == 200
            locked_at = time.monotonic()
            while (refused := two.post("/api/v2/stream/HTTP", json={})).status_code != 423:
                assert refused.status_code == 201, refused.text
                assert time.monotonic() - locked_at < 1.0, (
                    "node 2 still opens streams a second after the lock"
                )
                time.sleep(0.02)
            print(f"lock reached node 2 within {(time.monotonic() - locked_at) * 1000:.0f} ms")
            assert "maintenance" in refused.json()["detail"]
            assert two.get("/api/v2/status").json()["maintenance"] is True
        finally:
            assert two.get("/api/v2/maintenance/unlock").status_code == 200
        deadline = time.monotonic() + 1.0
        while (opened := one.post("/api/v2/stream/HTTP", json={})).status_code == 423:
            assert time.monotonic() < deadline, "node 1 still locked a second after node 2 unlocked"
            time.sleep(0.02)
        assert opened.status_code == 201
        one.post("/api/v2/maintenance/force_off")


def test_force_off_on_one_node_ends_the_streams_of_every_node(nodes: list[Node], speech_dir: Path) -> None:
    one, two = (client(n) for n in nodes)
    with one, two:
        one.post("/api/v2/maintenance/force_off")
        on_one, on_two = open_stream(one, "f1"), open_stream(two, "f2")
        samples = _speech(speech_dir, "2609", slice(0, 1))[: 8000 * 2]
        feed(one, on_one, samples)
        feed(two, on_two, samples)
        forced = one.post("/api/v2/maintenance/force_off")
        assert forced.status_code == 200 and forced.json()["closed"] == 2, forced.text
        deadline = time.monotonic() + 1.0
        while two.get("/api/v2/streams").json()["streams"] or one.get("/api/v2/streams").json()["streams"]:
            assert time.monotonic() < deadline, "streams still listed a second after force_off"
            time.sleep(0.05)
        assert two.post(f"/api/v2/stream/HTTP/data/{on_two}", content=b"\0\0").status_code == 404
        stops = two.get("/api/v2/logging", params={"type": "stream_stop", "stream": on_two}).json()
        assert [e["outcome"] for e in stops["events"]] == ["force_off"], stops


def test_a_backup_made_on_node_1_is_restored_through_node_2(nodes: list[Node], speech_dir: Path) -> None:
    one, two = (client(n) for n in nodes)
    with one, two:
        backup = one.get("/api/v2/maintenance/backup")
        assert backup.status_code == 200
        kept = set(_external_ids(one))
        assert "customer-a" in kept, "enrolled by the first test"
        assert two.request("DELETE", "/api/v2/leave", json={"external_id": "customer-a"}).status_code == 200
        assert one.post("/api/v2/voiceprint", json={"external_id": "customer-a"}).json()["exists"] is False
        assert one.get("/api/v2/lock").status_code == 200
        try:
            restored = two.post(
                "/api/v2/maintenance/loadbackup",
                files={"file": ("backup.json.gz", backup.content, "application/gzip")},
            )
            assert restored.status_code == 200, restored.text
        finally:
            assert one.get("/api/v2/maintenance/unlock").status_code == 200
        assert set(_external_ids(one)) == kept, "every voiceprint is back, seen from the other node"


def _external_ids(http: httpx.Client) -> list[str]:
    listed = http.get("/api/v2/logging", params={"type": "enroll"}).json()["events"]
    return [e["external_id"] for e in listed if e["outcome"] == "created"]


def test_a_killed_nodes_streams_end_within_seconds_and_nothing_stored_is_lost(
    nodes: list[Node], shared_env: dict[str, str], tmp_path: Path, speech_dir: Path
) -> None:
    three_node = start_node("node-3", tmp_path / "node-3", shared_env)
    try:
        one, three = client(nodes[0]), client(three_node)
        with one, three:
            doomed = open_stream(three, "doomed-call")
            feed(three, doomed, _speech(speech_dir, "3080", slice(0, 3)))
            enrolled = three.post("/api/v2/enroll", json={"uuid": doomed, "external_id": "customer-k"})
            assert enrolled.status_code == 201, enrolled.text
            assert [
                s["node"] for s in one.post("/api/v2/streams", json={"uuid": doomed}).json()["streams"]
            ] == ["node-3"]
            three_node.stop(kill=True)
            killed_at = time.monotonic()
            while one.post("/api/v2/streams", json={"uuid": doomed}).json()["streams"]:
                assert time.monotonic() - killed_at < 6.0, "the dead node's stream is still listed"
                time.sleep(0.1)
            detected_s = time.monotonic() - killed_at
            assert (
                one.post("/api/v2/verify", json={"uuid": doomed, "external_id": "customer-k"}).status_code
                == 404
            )
            assert one.post("/api/v2/voiceprint", json={"external_id": "customer-k"}).json()["exists"] is True
            deadline = time.monotonic() + 3.0
            while not (stops := _stops(one, doomed)):
                assert time.monotonic() < deadline, "no stream_stop event for the dead node's stream"
                time.sleep(0.1)
            assert [e["outcome"] for e in stops] == ["node_lost"]
            assert stops[0]["detail"]["node"] == "node-3"
            print(f"dead node detected after {detected_s:.1f} s")
            assert "node-3" not in one.get("/api/v2/status").json()["nodes"]
    finally:
        three_node.stop(kill=True)


def _stops(http: httpx.Client, uuid: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = http.get(
        "/api/v2/logging", params={"type": "stream_stop", "stream": uuid}
    ).json()["events"]
    return events


def test_failed_logins_are_counted_across_nodes(nodes: list[Node]) -> None:
    """Five free failures per client address (the policy), wherever they land; the sixth is blocked."""
    for attempt in range(5):
        node = nodes[attempt % 2]
        wrong = httpx.post(f"{node.url}/rest-auth/login/", json={"username": "mallory", "password": "guess"})
        assert wrong.status_code == 400, wrong.text
    blocked = httpx.post(f"{nodes[0].url}/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    assert blocked.status_code == 429, "five failures on two nodes count as five"
    time.sleep(int(blocked.headers["Retry-After"]))
    assert (
        httpx.post(  # a success clears the address again (for later tests)
            f"{nodes[1].url}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}
        ).status_code
        == 200
    )


@pytest.mark.slow
def test_verify_latency_direct_forwarded_and_a_redis_read(
    nodes: list[Node], speech_dir: Path, redis_server: RedisServer
) -> None:
    """The figures behind forwarding (docs/scale-out.md, "Shared live state"): a verify poll answered by
    the owner, the same poll sent to another node and forwarded, and one Redis read of a published
    voiceprint's size (what the alternative design pays instead of the forward)."""
    import statistics

    import redis

    polls = 300
    one, two = (client(n) for n in nodes)
    with one, two:
        uuid = open_stream(one, "latency-call")
        feed(one, uuid, _speech(speech_dir, "3080", slice(0, 3)))
        body = {"uuid": uuid, "external_id": "latency-customer"}
        assert one.post("/api/v2/enroll", json=body).status_code in (201, 409)
        figures = {}
        for name, http in (("direct", one), ("forwarded", two)):
            http.post("/api/v2/verify", json=body)  # warm: the owner lookup, connections
            took = []
            for _ in range(polls):
                started = time.perf_counter()
                assert http.post("/api/v2/verify", json=body).json()["result"] == "verified"
                took.append(time.perf_counter() - started)
            figures[name] = took
        one.delete(f"/api/v2/stream/HTTP/{uuid}")
    store = redis.Redis.from_url(redis_server.url())
    store.set("voxgate:bench:voiceprint", np.zeros(2 * 192, "<f4").tobytes())
    took = []
    for _ in range(polls):
        started = time.perf_counter()
        store.get("voxgate:bench:voiceprint")
        took.append(time.perf_counter() - started)
    figures["redis read (1.5 KiB)"] = took
    store.close()
    for name, values in figures.items():
        cuts = statistics.quantiles(values, n=100)
        print(f"{name}: p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms ({polls} sequential)")
    assert statistics.median(figures["forwarded"]) > statistics.median(figures["direct"])
