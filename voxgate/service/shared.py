"""The live state voxgate processes share: one interface, two backends.

- :class:`LocalState` (the embedded default, ``VOXGATE_REDIS_URL`` empty) is today's single process: signals
  reach this process at once, the login throttle counts in memory, leases always succeed, and there are no
  other nodes or remote streams.
- :class:`~voxgate.service.shared_redis.RedisState` is a cluster's: the same calls, backed by Redis (pub/sub
  for signals plus stored flags, a counted throttle, ``SET NX`` leases, node heartbeats with a TTL, one
  registry entry per live stream).

What lives here is *live* state: a restart of every node and of Redis loses only live streams. Everything
stored (voiceprints, events, the maintenance flag itself) stays in the database. How the runtime uses it:
:mod:`voxgate.service.cluster`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from voxgate.errors import ServiceError
from voxgate.service.throttle import LoginThrottle


class SharedStateUnavailable(ServiceError):
    """The shared live state (Redis) cannot be reached: a signal could not be sent to the other nodes."""


class Signal(StrEnum):
    """What one node tells every node (including itself)."""

    LOCK = "lock"  # maintenance mode on: refuse new streams, enroll, verify, import
    UNLOCK = "unlock"
    FORCE_OFF = "force_off"  # close every live stream now
    RESTORED = "restored"  # a backup replaced the store: forget cached reads
    PBX = "pbx"  # a PBX instance was started, stopped or removed: run the started ones the store holds


SignalListener = Callable[[Signal], Awaitable[None]]


@dataclass(frozen=True)
class NodeInfo:
    """A live node (one voxgate process) as its heartbeat tells it."""

    node: str
    url: str  # where other nodes forward a stream's requests ("" if unknown)
    started: float  # Unix seconds
    streams: int = 0


@dataclass
class StreamEntry:
    """One live stream in the cluster's registry: who owns it and what the stream listing shows.

    The owner writes it when the stream opens, refreshes it with every heartbeat and removes it when the
    stream closes; a dead owner's entries are removed by whichever node notices first."""

    uuid: str
    node: str
    type: str
    info: dict[str, Any]
    started: str  # ISO 8601, UTC
    frequency: int
    duration_s: float = 0.0
    speech_length: float = 0.0
    heard_speech_length: float = 0.0
    backlog_s: float = 0.0
    capped: bool = False
    dropped_s: float = 0.0
    last_verdict: str | None = None
    last_score: float | None = None
    state: str = "live"
    wall_s: float = 0.0  # seconds since the stream opened, at the owner's last heartbeat
    incarnation: float = 0.0  # when the owner process started: a restart under the same node id is another
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StreamEntry:
        data = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


class Throttle(Protocol):
    """What the login door needs of a throttle (:class:`voxgate.service.throttle.LoginThrottle` semantics)."""

    async def retry_after_header(self, address: str, username: str) -> int: ...
    async def failure(self, address: str, username: str) -> None: ...
    async def success(self, address: str, username: str) -> None: ...
    async def clear(self) -> None: ...


class LocalThrottle:
    """The in-memory throttle of one process behind the async :class:`Throttle` calls."""

    def __init__(self, throttle: LoginThrottle) -> None:
        self.throttle = throttle

    async def retry_after_header(self, address: str, username: str) -> int:
        return self.throttle.retry_after_header(address, username)

    async def failure(self, address: str, username: str) -> None:
        self.throttle.failure(address, username)

    async def success(self, address: str, username: str) -> None:
        self.throttle.success(address, username)

    async def clear(self) -> None:
        self.throttle.clear()


class SharedState(ABC):
    """Signals, leases, heartbeats and the stream registry that every process of a cluster sees alike."""

    distributed = False  # True: other processes may share this state (the runtime runs its heartbeat)

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    @abstractmethod
    async def start(self, on_signal: SignalListener) -> None:
        """Connect and start hearing the other nodes' signals (``on_signal`` runs for each)."""

    @abstractmethod
    async def stop(self) -> None: ...

    # -- signals and the maintenance flag --------------------------------------------------------------

    @abstractmethod
    async def announce(self, signal: Signal) -> None:
        """Tell every other node (the caller acts on its own process itself). Lock and unlock are stored
        first, so a node that misses the message still sees the flag with its next heartbeat."""

    @abstractmethod
    async def locked(self) -> bool | None:
        """The shared maintenance flag; None when the shared state holds none (the store's flag counts)."""

    @abstractmethod
    async def seed_locked(self, locked: bool) -> None:
        """Store the flag read from the store at start, unless the shared state holds one already."""

    # -- leases ----------------------------------------------------------------------------------------

    @abstractmethod
    async def lease(self, key: str, ttl_s: float) -> bool:
        """True for exactly one caller per ``key`` within ``ttl_s`` (who does a cluster-wide job once)."""

    # -- nodes and streams ------------------------------------------------------------------------------

    @abstractmethod
    async def heartbeat(self, node: NodeInfo, ttl_s: float, entries: list[StreamEntry]) -> None:
        """This node is alive for ``ttl_s`` more seconds; its streams are these."""

    @abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (heartbeat not expired)."""

    @abstractmethod
    async def put_stream(self, entry: StreamEntry) -> None: ...

    @abstractmethod
    async def drop_stream(self, stream_uuid: str) -> None: ...

    @abstractmethod
    async def stream(self, stream_uuid: str) -> StreamEntry | None:
        """A live stream's entry (its owner alive), wherever it runs; None if there is none."""

    @abstractmethod
    async def streams(self) -> list[StreamEntry]:
        """Every live stream's entry whose owner is alive."""

    @abstractmethod
    async def node(self, name: str) -> NodeInfo | None:
        """A live node by name; None if its heartbeat expired (or it never ran)."""

    @abstractmethod
    async def reap(self, mine: set[str] | None = None, incarnation: float = 0.0) -> list[StreamEntry]:
        """Remove the entries of dead nodes (each is returned to exactly one caller, who records that the
        stream ended) and, with ``mine`` (this node's live uuids), this node's entries of closed streams;
        entries under this node's id from an earlier ``incarnation`` (a restart) count as a dead node's."""

    # -- the login throttle -----------------------------------------------------------------------------

    @abstractmethod
    def throttle(self, local: LoginThrottle) -> Throttle:
        """The login throttle: ``local`` (the process's in-memory one) unless the counts are shared."""


class LocalState(SharedState):
    """One process: today's behaviour. There are no other nodes to signal or to list."""

    def __init__(self, node_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(node_id)
        self._leases: dict[str, float] = {}
        self._clock = clock

    async def start(self, on_signal: SignalListener) -> None:
        return None  # no other node sends signals

    async def stop(self) -> None:
        return None

    async def announce(self, signal: Signal) -> None:
        return None  # there is no other node to tell

    async def locked(self) -> bool | None:
        return None  # the process's own flag (from the store) is the only one

    async def seed_locked(self, locked: bool) -> None:
        return None

    async def lease(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        if self._leases.get(key, 0.0) > now:
            return False
        self._leases = {k: until for k, until in self._leases.items() if until > now}
        self._leases[key] = now + ttl_s
        return True

    async def heartbeat(self, node: NodeInfo, ttl_s: float, entries: list[StreamEntry]) -> None:
        return None

    async def nodes(self) -> list[NodeInfo]:
        return []

    async def put_stream(self, entry: StreamEntry) -> None:
        return None

    async def drop_stream(self, stream_uuid: str) -> None:
        return None

    async def stream(self, stream_uuid: str) -> StreamEntry | None:
        return None  # the local registry holds every stream there is

    async def streams(self) -> list[StreamEntry]:
        return []

    async def node(self, name: str) -> NodeInfo | None:
        return None

    async def reap(self, mine: set[str] | None = None, incarnation: float = 0.0) -> list[StreamEntry]:
        return []

    def throttle(self, local: LoginThrottle) -> Throttle:
        return LocalThrottle(local)
