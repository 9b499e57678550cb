"""This process's part in a cluster: what it tells the shared state, and what it does with what it hears.

With the embedded default (:class:`~voxgate.service.shared.LocalState`) nothing here runs but the signal
hooks, and the process behaves exactly as one process always has. With Redis:

- **heartbeat**, every third of ``VOXGATE_NODE_TTL_S`` (1 s by default): this node's address and its
  streams' registry entries (duration, speech, last verdict, ...); then the shared maintenance flag is read
  back (a backstop for a missed signal) and the entries of dead nodes are removed, each by exactly one
  node, which records the stream's ``stream_stop`` event with the outcome ``node_lost``;
- **stream starts and stops** write and remove the stream's entry at once (a registry listener), so a
  stream opened here is found from any node before its open request has returned;
- **signals** from other nodes: lock and unlock set maintenance mode, ``force_off`` closes this node's
  streams, ``restored`` forgets the cached reads;
- **owners**: which node (and which address) runs a stream that is not here, for the doors that forward
  a stream's requests to its owner (``voxgate.api.forward``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import httpx
from redis.exceptions import RedisError

from voxgate.errors import ServiceError
from voxgate.service import telephony
from voxgate.service.owner_client import OwnerClient
from voxgate.service.shared import NodeInfo, SharedState, Signal, StreamEntry
from voxgate.store import cache, events, subscriptions
from voxgate.store import pbx as pbx_store
from voxgate.streams import StreamSession
from voxgate.streams.registry import parse_uuid

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

NODE_LOST = "node_lost"  # stream_stop outcome of a stream whose node stopped beating
OWNER_CACHE_S = 2.0  # an owner's address is remembered this long (owners never change, addresses rarely)
FORWARD_TIMEOUT_S = 30.0  # a forwarded request (a data request may carry a long body)
# An idle forwarding connection is dropped well before the owner's server closes it (uvicorn: 5 s idle, as
# httpx's own default): at equal limits a request sent as the owner closes gets a ReadError, which a
# loaded two-worker box showed as a 502 to the caller.
FORWARD_KEEPALIVE_S = 2.0


class OwnerUnreachable(ServiceError):
    """The stream runs on another node, which did not answer a forwarded request."""


def entry_of(session: StreamSession, node: str, incarnation: float = 0.0) -> StreamEntry:
    """The registry entry of a live stream of this node."""
    return StreamEntry(
        uuid=session.uuid,
        node=node,
        type=session.type.value,
        info=dict(session.info),
        started=session.started.isoformat(),
        frequency=session.sample_rate_hz,
        duration_s=round(session.duration_s, 6),
        speech_length=round(session.speech_s, 3),
        heard_speech_length=round(session.heard_speech_s, 3),
        backlog_s=round(session.backlog_s, 3),
        capped=session.capped,
        dropped_s=round(session.dropped_s, 3),
        last_verdict=session.last_verdict,
        last_score=session.last_score,
        wall_s=round(time.monotonic() - session.started_monotonic, 3),
        incarnation=incarnation,
    )


class Cluster:
    """Heartbeat, signals and stream entries of one process (see the module's docstring)."""

    def __init__(self, runtime: Runtime, shared: SharedState, *, ttl_s: float) -> None:
        self.runtime = runtime
        self.shared = shared
        self.ttl_s = ttl_s
        self.url = runtime.settings.node_url.rstrip("/")
        self.started = time.time()
        self.client: httpx.AsyncClient | None = None  # forwards a stream's requests to its owner
        self.owners: OwnerClient | None = None  # the same, lean, for small bodies to http:// owners
        self._beater: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None
        self._flag: bool | None = None  # the shared maintenance flag as this node last saw it
        self._owners: dict[str, tuple[float, NodeInfo]] = {}

    @property
    def node_id(self) -> str:
        return self.shared.node_id

    @property
    def distributed(self) -> bool:
        return self.shared.distributed

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.shared.start(self.on_signal)
        if not self.distributed:
            return
        self.client = httpx.AsyncClient(
            timeout=FORWARD_TIMEOUT_S,
            follow_redirects=False,
            limits=httpx.Limits(keepalive_expiry=FORWARD_KEEPALIVE_S),
        )
        self.owners = OwnerClient(timeout_s=FORWARD_TIMEOUT_S, keepalive_s=FORWARD_KEEPALIVE_S)
        self._flag = self.runtime.locked  # the runtime read the shared flag before starting this
        await self.beat()
        self._beater = asyncio.create_task(self._beat_forever(), name="voxgate-heartbeat")

    async def stop(self) -> None:
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
        owners, self.owners = self.owners, None
        if owners is not None:
            await owners.aclose()
        await self.shared.stop()

    def set_url(self, url: str, *, force: bool = False) -> None:
        """The address other nodes forward to, once the server knows its port: announced at once.
        VOXGATE_NODE_URL wins unless ``force`` (a worker of ``--workers``: its own port)."""
        if self.url and not force:
            return
        self.url = url.rstrip("/")
        if self._beater is not None:
            self._announcing = asyncio.get_running_loop().create_task(self._beat_logged())

    async def _beat_forever(self) -> None:
        period = self.ttl_s / 3
        while True:
            await asyncio.sleep(period)
            await self._beat_logged()

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except (RedisError, OSError) as exc:  # Redis away: keep serving this node's own streams
            log.warning("heartbeat failed: %s", exc)
        except Exception:
            log.exception("heartbeat failed")

    async def beat(self) -> None:
        """One heartbeat: this node and its streams; the maintenance flag; the streams of dead nodes."""
        registry = self.runtime.registry
        sessions = registry.all() if registry is not None else []
        node = NodeInfo(self.node_id, self.url, self.started, len(sessions))
        await self.shared.heartbeat(
            node, self.ttl_s, [entry_of(s, self.node_id, self.started) for s in sessions if not s.closed]
        )
        locked = await self.shared.locked()
        if locked is not None and locked != self._flag:  # changed since last seen: a signal we missed
            self._flag = locked  # (not merely different: a lock made here is stored a moment later)
            if locked != self.runtime.locked:
                log.warning("maintenance mode %s by another node", "on" if locked else "off")
                self.runtime.locked = locked
        mine = {s.uuid for s in registry.all()} if registry is not None else set()
        for entry in await self.shared.reap(mine, self.started):
            try:
                await self._record_lost(entry)
            except Exception:  # the store away: the stream is gone all the same
                log.exception(
                    "could not record the end of a dead node's stream", extra={"stream_uuid": entry.uuid}
                )

    async def _record_lost(self, entry: StreamEntry) -> None:
        """What the dead owner would have done when its stream closed: the event, and the end of the
        stream's enroll and verify webhook subscriptions."""
        log.warning("stream ended: its node stopped", extra={"stream_uuid": entry.uuid, "node": entry.node})
        sessions = self.runtime.store.sessions
        await subscriptions.remove(sessions, channel_uuid=entry.uuid, types=subscriptions.STREAM_TYPES)
        await events.record(
            sessions,
            events.STREAM_STOP,
            NODE_LOST,
            stream_uuid=entry.uuid,
            duration_s=entry.wall_s,
            stream_type=entry.type,
            sample_rate_hz=entry.frequency,
            info=entry.info,
            audio_s=entry.duration_s,
            speech_s=entry.speech_length,
            dropped_s=entry.dropped_s,
            node=entry.node,
        )

    # -- signals -----------------------------------------------------------------------------------------

    async def on_signal(self, signal: Signal) -> None:
        """What another node asked every node to do."""
        log.info("signal from another node: %s", signal.value)
        if signal is Signal.LOCK:
            self.runtime.locked = True
        elif signal is Signal.UNLOCK:
            self.runtime.locked = False
        elif signal is Signal.FORCE_OFF:
            registry = self.runtime.registry
            if registry is not None:
                await registry.close_all("force_off")
        elif signal is Signal.RESTORED:
            cache.clear_all()
            await self._reconcile_pbx()
        elif signal is Signal.PBX:
            await self._reconcile_pbx()

    async def _reconcile_pbx(self) -> None:
        """Run the PBX instances the store says are started, and no other."""
        instances = self.runtime.pbx_instances
        if instances is not None and self.runtime.telephony:  # with --workers: worker 0's
            records = await pbx_store.list_all(self.runtime.store.sessions)
            await telephony.reconcile(instances, records, self.runtime.settings)

    # -- stream entries ------------------------------------------------------------------------------------

    async def stream_started(self, session: StreamSession) -> None:
        if self.distributed:
            await self.shared.put_stream(entry_of(session, self.node_id, self.started))

    async def stream_stopped(self, session: StreamSession, reason: str) -> None:
        if self.distributed:
            await self.shared.drop_stream(session.uuid)

    async def remote_streams(self) -> list[StreamEntry]:
        """Live streams of the other nodes (none on one process, none known while Redis is away)."""
        if not self.distributed:
            return []
        try:
            return [e for e in await self.shared.streams() if e.node != self.node_id]
        except (RedisError, OSError) as exc:
            log.warning("other nodes' streams unknown: %s", exc)
            return []

    async def nodes(self) -> list[str]:
        """The live nodes' names (none on one process)."""
        if not self.distributed:
            return []
        try:
            return [n.node for n in await self.shared.nodes()]
        except (RedisError, OSError) as exc:
            log.warning("live nodes unknown: %s", exc)
            return [self.node_id]

    async def owner(self, stream_uuid: str) -> NodeInfo | None:
        """The live node running ``stream_uuid`` if it is another one with an address; None otherwise."""
        if not self.distributed:
            return None
        now = time.monotonic()
        cached = self._owners.get(stream_uuid)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            entry = await self.shared.stream(stream_uuid)
            if entry is None or entry.node == self.node_id:
                return None
            node = await self.shared.node(entry.node)
        except (RedisError, OSError) as exc:  # Redis away: only this node's own streams are known
            log.warning("no stream owner lookup: %s", exc)
            return None
        if node is None or not node.url:
            return None
        if len(self._owners) > 10_000:
            self._owners.clear()
        self._owners[stream_uuid] = (now + OWNER_CACHE_S, node)
        return node

    async def elsewhere(self, stream_uuid: str) -> str | None:
        """The canonical uuid of ``stream_uuid`` if another live node runs it; None otherwise."""
        try:
            key = parse_uuid(stream_uuid)
        except ValueError:
            return None
        return key if await self.owner(key) is not None else None

    def forget_owner(self, stream_uuid: str) -> None:
        self._owners.pop(stream_uuid, None)
