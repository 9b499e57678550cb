"""Snapshots of voiceprints and whole-store backups: checked against the engine's models, written in one
transaction, every attempt an event (refusals included)."""

from __future__ import annotations

import asyncio

from voxgate.errors import VoxgateError
from voxgate.service import maintenance
from voxgate.service.models import engine_models
from voxgate.service.runtime import Runtime
from voxgate.service.shared import Signal
from voxgate.store import backup as backups
from voxgate.store import cache, snapshots
from voxgate.store.snapshots import ImportCounts, ImportMode


async def import_snapshot(runtime: Runtime, data: bytes, mode: ImportMode, user: str) -> ImportCounts:
    """Check the whole document (format, every vector against the engine's models), then write it."""
    limit = runtime.settings.max_snapshot_bytes
    try:
        expected = engine_models(runtime.settings)
        entries = await asyncio.to_thread(snapshots.parse_snapshot, data, expected, limit)
        counts = await snapshots.import_entries(runtime.store.sessions, entries, mode)
    except VoxgateError as exc:
        await maintenance.record(runtime, "snapshot_import", user, "refused", mode=mode.value, error=exc.message)
        raise
    await maintenance.record(
        runtime,
        "snapshot_import",
        user,
        mode=mode.value,
        imported=counts.imported,
        overwritten=counts.overwritten,
        skipped=counts.skipped,
    )
    return counts


async def create_backup(runtime: Runtime, user: str) -> bytes:
    """One consistent read of the store, gzip-compressed JSON."""
    document = await backups.create_backup(runtime.store.sessions)
    data = await asyncio.to_thread(backups.encode_backup, document)
    await maintenance.record(runtime, "backup", user, bytes=len(data), **document["counts"])
    return data


async def restore_backup(runtime: Runtime, data: bytes, user: str) -> tuple[backups.Backup, dict[str, int]]:
    """Replace the stored tables with the backup's, only in maintenance mode; the whole file is checked
    before a row is written."""
    maintenance.require_locked(runtime)
    try:
        expected = engine_models(runtime.settings)
        parsed = await asyncio.to_thread(
            backups.parse_backup, data, expected, runtime.settings.max_snapshot_bytes
        )
        counts = await backups.restore(runtime.store.sessions, parsed)
    except VoxgateError as exc:
        await maintenance.record(runtime, "restore", user, "refused", error=exc.message)
        raise
    cache.clear_all()
    await runtime.shared.announce(Signal.RESTORED)  # the other nodes forget their cached reads too
    await maintenance.record(runtime, "restore", user, backup_created=parsed.created, restored=counts)
    return parsed, counts
