"""Maintenance mode (persisted across restarts) and closing every stream at once, on every node.

The caller's process acts at once; the other nodes of a cluster hear it as a signal through the shared
state (:mod:`voxgate.service.shared`), within a Redis round trip, and re-read the shared flag with every
heartbeat in case they missed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxgate.errors import MaintenanceMode, NotInMaintenance
from voxgate.service.runtime import Runtime
from voxgate.service.shared import Signal
from voxgate.store import events, settings_kv

LOCK_HINT = "voxgate is in maintenance mode: unlock it with GET /api/v2/maintenance/unlock"


@dataclass(frozen=True)
class LockChange:
    locked: bool
    changed: bool


def require_unlocked(runtime: Runtime) -> None:
    """New streams, enroll, verify and import are refused while maintenance mode is on."""
    if runtime.locked:
        raise MaintenanceMode(LOCK_HINT)


def require_locked(runtime: Runtime) -> None:
    """A restore replaces the store, so it waits for maintenance mode."""
    if not runtime.locked:
        raise NotInMaintenance(
            "a backup can only be restored in maintenance mode: GET /api/v2/lock first (and close running "
            "streams with POST /api/v2/maintenance/force_off)"
        )


async def record(runtime: Runtime, action: str, user: str, outcome: str = "ok", **detail: Any) -> None:
    """A ``maintenance`` event: who did what."""
    await events.record(runtime.store.sessions, "maintenance", outcome, action=action, user=user, **detail)


async def set_locked(runtime: Runtime, locked: bool, user: str) -> LockChange:
    """Enter or leave maintenance mode; idempotent (the event says whether it changed)."""
    was = runtime.locked
    await settings_kv.set(runtime.store.sessions, settings_kv.MAINTENANCE, locked)
    runtime.locked = locked
    await record(runtime, "lock" if locked else "unlock", user, changed=was != locked)
    await runtime.shared.announce(Signal.LOCK if locked else Signal.UNLOCK)  # SharedStateUnavailable: 503
    return LockChange(locked=locked, changed=was != locked)


async def force_off(runtime: Runtime, user: str) -> int:
    """Close every live stream now, on every node (their webhooks and events see the reason
    ``force_off``); returns how many: this node's, plus the other nodes' live ones when it was sent."""
    remote = len(await runtime.cluster.remote_streams()) if runtime.cluster is not None else 0
    closed = await runtime.streams.close_all("force_off") if runtime.running else 0
    await record(runtime, "force_off", user, closed=closed + remote)
    await runtime.shared.announce(Signal.FORCE_OFF)  # SharedStateUnavailable: 503
    return closed + remote
