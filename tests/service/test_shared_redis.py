"""The shared live state on a real Redis: signals, the flag, leases, heartbeats, the stream registry, the
cluster-wide login throttle. Two :class:`RedisState` objects are two nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.redis_server import free_port
from voxgate.service.shared import LocalState, NodeInfo, SharedStateUnavailable, Signal, StreamEntry
from voxgate.service.shared_redis import RedisState
from voxgate.service.throttle import LoginThrottle, Policy

pytestmark = pytest.mark.asyncio


class Heard:
    """The signals a node received, and when."""

    def __init__(self) -> None:
        self.signals: list[tuple[Signal, float]] = []
        self.event = asyncio.Event()

    async def __call__(self, signal: Signal) -> None:
        self.signals.append((signal, time.monotonic()))
        self.event.set()


@pytest_asyncio.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[RedisState, RedisState, Heard, Heard]]:
    one, two = RedisState("node-1", redis_url), RedisState("node-2", redis_url)
    heard_one, heard_two = Heard(), Heard()
    await one.start(heard_one)
    await two.start(heard_two)
    try:
        yield one, two, heard_one, heard_two
    finally:
        await one.stop()
        await two.stop()


def entry(uuid: str, node: str) -> StreamEntry:
    return StreamEntry(uuid, node, "HTTP", {"callid": uuid}, "2026-01-01T00:00:00+00:00", 8000)


async def test_a_lock_reaches_the_other_node_at_once_and_stays_stored(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    one, two, heard_one, heard_two = nodes
    sent = time.monotonic()
    await one.announce(Signal.LOCK)
    await asyncio.wait_for(heard_two.event.wait(), 1.0)
    assert heard_two.signals[0][0] is Signal.LOCK
    assert heard_two.signals[0][1] - sent < 1.0
    assert await two.locked() is True, "a node that missed the message reads the stored flag"
    await asyncio.sleep(0.1)
    assert heard_one.signals == [], "the sender acts on itself; it does not hear its own signal"
    await one.announce(Signal.UNLOCK)
    assert await two.locked() is False
    await one.seed_locked(True)
    assert await two.locked() is False, "seeding never overrides a flag the cluster already holds"


async def test_a_lease_goes_to_one_node_until_it_expires(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    one, two, _, _ = nodes
    assert await one.lease("purge", 0.3)
    assert not await two.lease("purge", 0.3)
    assert not await one.lease("purge", 0.3)
    await asyncio.sleep(0.4)
    assert await two.lease("purge", 0.3)


async def test_a_dead_nodes_streams_are_reaped_once_and_its_heartbeat_expires(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    one, two, _, _ = nodes
    # 2 s to live: the checks below must run within it even on a busy CI box (1 s once was not enough)
    await one.heartbeat(NodeInfo("node-1", "http://a", 0.0, 1), 2.0, [entry("u1", "node-1")])
    await two.heartbeat(NodeInfo("node-2", "http://b", 0.0, 1), 10.0, [entry("u2", "node-2")])
    assert {e.uuid for e in await two.streams()} == {"u1", "u2"}
    assert (found := await two.stream("u1")) is not None and found.node == "node-1"
    assert {n.node for n in await two.nodes()} == {"node-1", "node-2"}
    assert await two.reap({"u2"}) == []
    await asyncio.sleep(2.1)  # node-1 stops beating
    assert await two.stream("u1") is None
    assert [e.uuid for e in await two.streams()] == ["u2"]
    reaped = await asyncio.gather(two.reap({"u2"}), one.reap(set()))
    assert sorted(e.uuid for r in reaped for e in r) == ["u1"], "each dead stream is reported exactly once"
    assert [n.node for n in await two.nodes()] == ["node-2"]


async def test_a_nodes_own_entry_of_a_closed_stream_is_removed_quietly(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    _, two, _, _ = nodes
    await two.heartbeat(NodeInfo("node-2", "", 0.0, 2), 10.0, [entry("u2", "node-2"), entry("u3", "node-2")])
    assert await two.reap({"u2"}) == [], "a stream this node closed is no loss"
    assert [e.uuid for e in await two.streams()] == ["u2"]


async def test_a_restarted_nodes_old_streams_are_reaped_as_lost(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    _, two, _, _ = nodes
    old = entry("u-old", "node-2")
    old.incarnation = 1.0
    await two.put_stream(old)
    await two.heartbeat(NodeInfo("node-2", "", 2.0, 0), 10.0, [])  # node-2 again, a new process
    reaped = await two.reap(set(), 2.0)
    assert [e.uuid for e in reaped] == ["u-old"], "the old process's stream ended with it: reported"


async def test_failed_logins_are_counted_across_nodes(
    nodes: tuple[RedisState, RedisState, Heard, Heard],
) -> None:
    one, two, _, _ = nodes
    policy = Policy(free_failures=2, base_delay_s=30.0, max_delay_s=60.0)
    local = LoginThrottle(per_address=policy, per_username=policy)
    on_one, on_two = one.throttle(local), two.throttle(local)
    await on_one.failure("10.0.0.9", "admin")
    assert await on_two.retry_after_header("10.0.0.9", "admin") == 0
    await on_two.failure("10.0.0.9", "admin")
    assert await on_one.retry_after_header("10.0.0.9", "admin") == 30, (
        "two failures on two nodes count as two"
    )
    assert len(local) == 0, "nothing is counted in the process"
    await on_one.success("10.0.0.9", "admin")
    assert await on_two.retry_after_header("10.0.0.10", "admin") == 0, "the username's count went down by one"
    await on_two.clear()
    assert await on_one.retry_after_header("10.0.0.9", "admin") == 0


async def test_the_local_state_is_one_process() -> None:
    local = LocalState("solo")
    heard = Heard()
    await local.start(heard)
    await local.announce(Signal.FORCE_OFF)
    assert heard.signals == [] and await local.locked() is None
    assert await local.streams() == [] and await local.stream("x") is None and await local.reap() == []
    assert await local.lease("k", 10.0) and not await local.lease("k", 10.0)
    throttle = LoginThrottle()
    await local.throttle(throttle).failure("a", "b")
    assert len(throttle) == 2, "the process's own counts, as before"


async def test_without_redis_a_node_refuses_to_start_and_logins_are_throttled_per_node() -> None:
    gone = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    state = RedisState("lonely", gone)
    with pytest.raises(SharedStateUnavailable, match="cannot reach Redis"):
        await state.start(Heard())
    with pytest.raises(SharedStateUnavailable, match="could not be sent to the others"):
        await state.announce(Signal.LOCK)
    policy = Policy(free_failures=1, base_delay_s=30.0, max_delay_s=60.0)
    local = LoginThrottle(per_address=policy, per_username=policy)
    throttle = state.throttle(local)
    await throttle.failure("10.0.0.9", "admin")
    assert await throttle.retry_after_header("10.0.0.9", "admin") == 30, "this node's own counts stand in"
    await state.client.aclose()
