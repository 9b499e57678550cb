"""The SIP front door: real Kamailio (deploy/kamailio/kamailio.cfg) in front of two real voxgate nodes.

The PBX is a second Kamailio, the registrar of the telephony tests (tests/telephony/kamailio.cfg, digest
auth): the front door registers to it as the one endpoint ``voxgate`` (module uac), sipp calls that
account at the PBX, the PBX relays each call to the front door, whose dispatcher spreads them over the
nodes' SIP agents (one PBX instance, stored and started once through the proxy, pointing at the front
door: every node runs it). Each call becomes a SIP stream on the node that took it, findable by its call id;
a stop through any node stops it on every node.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.local_cluster import LocalCluster
from tests.telephony import peers
from tests.telephony.conftest import run_sipp

pytestmark = pytest.mark.timeout(300)
CALLS = 4


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Kamailio]:
    with peers.kamailio(tmp_path_factory.mktemp("pbx")) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, pbx: peers.Kamailio
) -> Iterator[LocalCluster]:
    running = LocalCluster.start(
        tmp_path_factory.mktemp("sip-cluster"),
        model_dir,
        nodes=2,
        kamailio=True,
        VOXGATE_CLUSTER_PBX_HOST="127.0.0.1",
        VOXGATE_CLUSTER_PBX_PORT=str(pbx.port),
        VOXGATE_CLUSTER_PBX_USER=peers.USER,
        VOXGATE_CLUSTER_PBX_PASSWORD=peers.PASSWORD,
    )
    try:
        yield running
    finally:
        running.stop()


def options(port: int, user: str) -> int:
    """The status of an OPTIONS for ``user`` sent to 127.0.0.1:``port`` (0: no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1)
        local = s.getsockname()[1]
        request = (
            f"OPTIONS sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: probe{time.monotonic_ns()}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(request.encode(), ("127.0.0.1", port))
        try:
            return int(s.recv(65535).split(b" ", 2)[1])
        except TimeoutError:
            return 0


@pytest.fixture(scope="module")
def pbx_instance(cluster: LocalCluster, pbx: peers.Kamailio) -> str:
    """One PBX instance, stored and started once through the proxy, pointing at the front door: every node
    runs it (the node that answered the start tells the others)."""
    headers = cluster.login()
    low, high = peers.free_port_range(64)
    body = {
        "name": "front door",
        "host": "127.0.0.1",
        "port": cluster.sip_port,
        "username": peers.USER,
        "password": "the-front-door-takes-nodes-by-address",
        "expires": 60,
        "local_port": int(cluster.env["VOXGATE_CLUSTER_NODE_SIP_PORT"]),
        "rtp_port_min": low,
        "rtp_port_max": high,
    }
    created = httpx.post(f"{cluster.url}/api/v2/pbx/", json=body, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    pbx_id = str(created.json()["id"])
    started = httpx.post(f"{cluster.url}/api/v2/pbx/{pbx_id}/start", headers=headers, timeout=30)
    assert started.status_code == 200, started.text
    for k in range(1, cluster.nodes + 1):
        node, node_headers = cluster.node_url(k), cluster.login(cluster.node_url(k))

        def registered(node: str = node, headers: dict[str, str] = node_headers) -> bool:
            instance = httpx.get(f"{node}/api/v2/pbx/{pbx_id}", headers=headers, timeout=30).json()
            return bool(instance["registration"]["state"] == "registered")

        cluster.wait(f"node{k} registered at the front door", registered, timeout_s=15)
    # the front door registered to the PBX (uac): an OPTIONS for the account reaches it through the PBX
    cluster.wait(
        "front door registered at the PBX", lambda: options(pbx.port, peers.USER) == 200, timeout_s=30
    )
    return pbx_id


def calls_by_node(
    cluster: LocalCluster, pbx_id: str, nodes: tuple[int, ...] = (1, 2)
) -> dict[str, tuple[int, dict[str, Any]]]:
    """Per node, asked of it directly: its SIP agent's calls in progress, and the SIP streams it lists by
    call id (its own; every node's once the shared stream registry lands)."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for k in nodes:
        node = cluster.node_url(k)
        headers = cluster.login(node)
        calls = httpx.get(f"{node}/api/v2/pbx/{pbx_id}", headers=headers, timeout=30).json()["calls"]
        streams = httpx.post(
            f"{node}/api/v2/streams", json={"info": {"pbx": pbx_id}}, headers=headers, timeout=30
        ).json()["streams"]
        found[f"node{k}"] = (int(calls), {s["info"]["callid"]: s for s in streams if s["type"] == "SIP"})
    return found


async def place_calls(
    cluster: LocalCluster,
    pbx: peers.Kamailio,
    pbx_id: str,
    speech_dir: Path,
    tmp_path: Path,
    *,
    prefix: str,
    nodes: tuple[int, ...] = (1, 2),
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """CALLS sipp calls at once to the PBX's account; per node the most calls it had at once, and every
    call's stream as the nodes listed it, by call id."""
    pcm = peers.speech_8k(speech_dir, "1688", 6)
    pcap = tmp_path / "call.pcap"
    peers.write_pcap(pcap, peers.rtp_packets(peers.encode("PCMU", pcm), 0))
    xml = peers.scenario(tmp_path, pcap, "PCMU", "caller")
    command = peers.sipp_command(
        xml, pbx, call_id=f"{prefix}-%u@sip", calls=CALLS, concurrent=CALLS, rate=20, hold_ms=7000
    )
    sipp = asyncio.create_task(run_sipp(command, tmp_path))
    most = {f"node{k}": 0 for k in nodes}
    streams: dict[str, dict[str, Any]] = {}
    while not sipp.done():
        for node, (calls, listed) in (await asyncio.to_thread(calls_by_node, cluster, pbx_id, nodes)).items():
            most[node] = max(most[node], calls)
            streams.update(listed)
        await asyncio.sleep(0.3)
    result = await sipp
    assert result.returncode == 0, result.stdout
    assert sorted(streams) == sorted(f"{prefix}-{n}@sip" for n in range(1, CALLS + 1)), streams
    for callid, stream in streams.items():
        assert stream["info"] == {"callid": callid, "caller": "caller", "callee": peers.USER, "pbx": pbx_id}
    # every call's end (sipp's BYE through both proxies) closed its stream, and the agents are idle
    cluster.wait(
        "calls ended",
        lambda: all(
            calls == 0 and not listed for calls, listed in calls_by_node(cluster, pbx_id, nodes).values()
        ),
        timeout_s=10,
    )
    return most, streams


@pytest.mark.asyncio
async def test_calls_through_kamailio_spread_over_the_nodes(
    cluster: LocalCluster, pbx: peers.Kamailio, pbx_instance: str, speech_dir: Path, tmp_path: Path
) -> None:
    most, _ = await place_calls(cluster, pbx, pbx_instance, speech_dir, tmp_path, prefix="spread")
    assert most == {"node1": CALLS // 2, "node2": CALLS // 2}  # round robin over both nodes' agents


def kamailio_says(cluster: LocalCluster, text: str) -> bool:
    return text in (cluster.folder / "logs" / "kamailio.log").read_text(errors="replace")


@pytest.mark.asyncio
async def test_a_dead_node_gets_no_calls_and_rejoins(
    cluster: LocalCluster, pbx: peers.Kamailio, pbx_instance: str, speech_dir: Path, tmp_path: Path
) -> None:
    node2 = f"sip:127.0.0.12:{cluster.env['VOXGATE_CLUSTER_NODE_SIP_PORT']}"
    cluster.kill("node2")
    down_s = cluster.wait(
        "node2 out of the dispatcher", lambda: kamailio_says(cluster, f"{node2} is down"), 5
    )
    print(f"Kamailio took node2 out {down_s:.2f} s after kill -9")
    most, _ = await place_calls(
        cluster, pbx, pbx_instance, speech_dir, tmp_path, prefix="failover", nodes=(1,)
    )
    assert most == {"node1": CALLS}

    # restarted, the node starts the stored PBX instance by itself, answers the probes and takes calls again
    cluster.run("start-node", "2", timeout_s=300)
    up_s = cluster.wait("node2 back in the dispatcher", lambda: kamailio_says(cluster, f"{node2} is up"), 10)
    print(f"node2 back in the dispatcher {up_s:.2f} s after it answered /health")
    most, _ = await place_calls(cluster, pbx, pbx_instance, speech_dir, tmp_path, prefix="rejoined")
    assert most == {"node1": CALLS // 2, "node2": CALLS // 2}


def test_a_pbx_instance_stopped_on_one_node_stops_on_every_node(
    cluster: LocalCluster, pbx_instance: str
) -> None:
    headers = cluster.login()
    stopped = httpx.post(f"{cluster.node_url(1)}/api/v2/pbx/{pbx_instance}/stop", headers=headers, timeout=30)
    assert stopped.status_code == 200, stopped.text

    def state(k: int) -> str:
        node = cluster.node_url(k)
        instance = httpx.get(
            f"{node}/api/v2/pbx/{pbx_instance}", headers=cluster.login(node), timeout=30
        ).json()
        return str(instance["registration"]["state"])

    cluster.wait("stopped on node2 too", lambda: state(2) == "stopped", timeout_s=5)
    assert state(1) == "stopped"
