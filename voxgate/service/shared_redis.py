"""The shared live state of a cluster, in Redis (``VOXGATE_REDIS_URL``).

Keys (prefix ``voxgate:``)::

    maintenance          "1" / "0"   the maintenance flag (the store holds it too; this copy is what a
                                     node re-reads every heartbeat in case it missed a signal)
    signals              channel     {"signal": "lock"|"unlock"|"force_off"|"restored", "node": ...}
    node:<id>            JSON, PX    a node's heartbeat: gone VOXGATE_NODE_TTL_S after its last beat
    streams              hash        stream uuid -> StreamEntry JSON (owner, type, info, state, verdict...)
    throttle:<key>       hash, TTL   failed logins of one address (``ip:``) or username (``user:``)
    lease:<key>          SET NX PX   who does a cluster-wide job once

Every call is one round trip (a pipeline where it writes several keys). Redis is live state only: losing it
loses the live streams' registry entries (each owner writes its own again within a heartbeat) and the
throttle counts, never anything stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voxgate.service.shared import (
    LocalThrottle,
    NodeInfo,
    SharedState,
    SharedStateUnavailable,
    Signal,
    SignalListener,
    StreamEntry,
    Throttle,
)
from voxgate.service.throttle import LoginThrottle, Policy

log = logging.getLogger(__name__)

PREFIX = "voxgate:"
MAINTENANCE = PREFIX + "maintenance"
SIGNALS = PREFIX + "signals"
STREAMS = PREFIX + "streams"
NODES = PREFIX + "nodes"
RESUBSCRIBE_S = 1.0  # after a lost connection, the signal listener tries again this often

# success: undo the pessimistic count of the username (never below 0), forget the address
_SUCCESS = """
redis.call('DEL', KEYS[1])
if redis.call('HEXISTS', KEYS[2], 'f') == 1 then
  if redis.call('HINCRBY', KEYS[2], 'f', -1) < 0 then redis.call('HSET', KEYS[2], 'f', 0) end
end
return 1
"""


def node_key(node: str) -> str:
    return f"{PREFIX}node:{node}"


class RedisState(SharedState):
    """One connection pool per process; a task listens to the signal channel."""

    distributed = True

    def __init__(self, node_id: str, url: str) -> None:
        super().__init__(node_id)
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            health_check_interval=10,
        )
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self, on_signal: SignalListener) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:  # refuse to start rather than run as a lonely node
            raise SharedStateUnavailable(f"cannot reach Redis (VOXGATE_REDIS_URL): {exc}") from exc
        self._listener = asyncio.create_task(self._listen(on_signal), name="voxgate-signals")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(node_key(self.node_id))
            await self.client.srem(NODES, self.node_id)
        await self.client.aclose()

    async def _listen(self, on_signal: SignalListener) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(SIGNALS)
                self._subscribed.set()
                async for message in pubsub.listen():
                    signal = self._parse(message)
                    if signal is None:
                        continue
                    try:
                        await on_signal(signal)
                    except Exception:  # one bad handler must not deafen the node
                        log.exception("handling signal %s failed", signal.value)
            except (RedisError, OSError) as exc:
                log.warning("signal channel lost (%s); resubscribing", exc)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _parse(self, message: dict[str, Any]) -> Signal | None:
        try:
            data = json.loads(message["data"])
            if data.get("node") == self.node_id:
                return None  # our own: the caller acted on this process already
            return Signal(data["signal"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed signal: %r", message.get("data"))
            return None

    # -- signals ---------------------------------------------------------------------------------------

    async def announce(self, signal: Signal) -> None:
        body = json.dumps({"signal": signal.value, "node": self.node_id})
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if signal in (Signal.LOCK, Signal.UNLOCK):
                    pipe.set(MAINTENANCE, "1" if signal is Signal.LOCK else "0")
                pipe.publish(SIGNALS, body)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(
                f"{signal.value} was done on this node but could not be sent to the others (Redis: {exc}); "
                "repeat it once Redis answers"
            ) from exc

    async def locked(self) -> bool | None:
        value = await self.client.get(MAINTENANCE)
        return None if value is None else value == "1"

    async def seed_locked(self, locked: bool) -> None:
        """Seed the shared flag from the store at start (a fresh Redis holds none)."""
        await self.client.set(MAINTENANCE, "1" if locked else "0", nx=True)

    # -- leases ----------------------------------------------------------------------------------------

    async def lease(self, key: str, ttl_s: float) -> bool:
        taken = await self.client.set(
            f"{PREFIX}lease:{key}", self.node_id, nx=True, px=max(1, int(ttl_s * 1000))
        )
        return bool(taken)

    # -- nodes and streams ------------------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo, ttl_s: float, entries: list[StreamEntry]) -> None:
        body = json.dumps(
            {"node": node.node, "url": node.url, "started": node.started, "streams": node.streams}
        )
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(node_key(node.node), body, px=int(ttl_s * 1000))
            pipe.sadd(NODES, node.node)
            if entries:
                pipe.hset(STREAMS, mapping={e.uuid: e.to_json() for e in entries})
            await pipe.execute()

    async def nodes(self) -> list[NodeInfo]:
        names = sorted(str(n) for n in await self.client.smembers(NODES))
        if not names:
            return []
        found = []
        for body in await self.client.mget([node_key(n) for n in names]):
            if body is None:
                continue
            data = json.loads(body)
            found.append(NodeInfo(data["node"], data["url"], data["started"], data.get("streams", 0)))
        return found

    async def node(self, name: str) -> NodeInfo | None:
        body = await self.client.get(node_key(name))
        if body is None:
            return None
        data = json.loads(body)
        return NodeInfo(data["node"], data["url"], data["started"], data.get("streams", 0))

    async def _alive(self, owners: set[str]) -> set[str]:
        if not owners:
            return set()
        names = sorted(owners)
        bodies = await self.client.mget([node_key(n) for n in names])
        return {name for name, body in zip(names, bodies, strict=True) if body is not None}

    async def put_stream(self, entry: StreamEntry) -> None:
        await self.client.hset(STREAMS, entry.uuid, entry.to_json())

    async def drop_stream(self, stream_uuid: str) -> None:
        await self.client.hdel(STREAMS, stream_uuid)

    async def stream(self, stream_uuid: str) -> StreamEntry | None:
        body = await self.client.hget(STREAMS, stream_uuid)
        if body is None:
            return None
        entry = StreamEntry.from_json(str(body))
        return entry if await self._alive({entry.node}) else None

    async def _entries(self) -> list[StreamEntry]:
        return [StreamEntry.from_json(str(body)) for body in (await self.client.hgetall(STREAMS)).values()]

    async def streams(self) -> list[StreamEntry]:
        entries = await self._entries()
        alive = await self._alive({e.node for e in entries})
        return [e for e in entries if e.node in alive]

    async def reap(self, mine: set[str] | None = None, incarnation: float = 0.0) -> list[StreamEntry]:
        """Entries of dead nodes (and of this node id's earlier incarnation), and (``mine``: this node's
        live uuids, read after the entries) this node's own entries of streams that already closed; HDEL
        decides who reports each one."""
        entries = await self._entries()
        alive = await self._alive({e.node for e in entries})
        ended: list[StreamEntry] = []
        for entry in entries:
            ours = mine is not None and entry.node == self.node_id
            if ours and entry.incarnation == incarnation:
                if mine is not None and entry.uuid not in mine:
                    await self.client.hdel(STREAMS, entry.uuid)  # closed here: no loss to report
                continue
            if entry.node in alive and not ours:
                continue
            if await self.client.hdel(STREAMS, entry.uuid):
                entry.state = "ended"
                ended.append(entry)
        dead = {e.node for e in entries} - alive
        if dead:
            await self.client.srem(NODES, *dead)
        return ended

    # -- the login throttle -----------------------------------------------------------------------------

    def throttle(self, local: LoginThrottle) -> Throttle:
        return RedisThrottle(self.client, local)


class RedisThrottle:
    """:class:`~voxgate.service.throttle.LoginThrottle`'s policy, counted in Redis by every node.

    Times are wall-clock seconds (nodes do not share a monotonic clock); a key expires ``forget_after_s``
    after its last failure, as the in-memory one forgets it. While Redis does not answer, this process's
    own counts (``local``) stand in: logins keep working, throttled per node."""

    def __init__(self, client: aioredis.Redis, local: LoginThrottle) -> None:
        self.client = client
        self.local = LocalThrottle(local)
        self.per_address: Policy = local.per_address
        self.per_username: Policy = local.per_username

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str]:
        return f"{PREFIX}throttle:ip:{address}", f"{PREFIX}throttle:user:{username}"

    async def retry_after_header(self, address: str, username: str) -> int:
        try:
            return await self._retry_after_header(address, username)
        except (RedisError, OSError) as exc:
            log.warning("login throttle on this node only: %s", exc)
            return await self.local.retry_after_header(address, username)

    async def failure(self, address: str, username: str) -> None:
        try:
            await self._failure(address, username)
        except (RedisError, OSError):
            await self.local.failure(address, username)

    async def success(self, address: str, username: str) -> None:
        try:
            await self.client.eval(_SUCCESS, 2, *self._keys(address, username))
        except (RedisError, OSError):
            await self.local.success(address, username)

    async def clear(self) -> None:
        await self.local.clear()
        keys = [key async for key in self.client.scan_iter(match=f"{PREFIX}throttle:*", count=1000)]
        if keys:
            await self.client.delete(*keys)

    async def _retry_after_header(self, address: str, username: str) -> int:
        keys = self._keys(address, username)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, ["f", "t"])
            counts = await pipe.execute()
        now = time.time()
        wait = 0.0
        for policy, (failures, last) in zip((self.per_address, self.per_username), counts, strict=True):
            if failures is not None and last is not None:
                wait = max(wait, float(last) + policy.delay_s(int(failures)) - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    async def _failure(self, address: str, username: str) -> None:
        now = time.time()
        async with self.client.pipeline(transaction=True) as pipe:
            for key, policy in zip(
                self._keys(address, username), (self.per_address, self.per_username), strict=True
            ):
                pipe.hincrby(key, "f", 1)
                pipe.hset(key, "t", repr(now))
                pipe.expire(key, max(1, math.ceil(policy.forget_after_s)))
            await pipe.execute()
