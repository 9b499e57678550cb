"""Hourly purge of events past their retention and of expired tokens (once per cluster: a lease)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.store import accounts, events

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


async def purge_once(
    sessions: async_sessionmaker[AsyncSession], retention_days: int, now: datetime | None = None
) -> tuple[int, int]:
    """Delete events older than the retention and expired tokens; (events, tokens) deleted."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    old_events = await events.purge_older_than(sessions, cutoff)
    old_tokens = await accounts.purge_expired(sessions)
    if old_events or old_tokens:
        log.info(
            "purged %d events older than %s and %d expired tokens", old_events, cutoff.isoformat(), old_tokens
        )
    return old_events, old_tokens


async def purge_forever(
    sessions: async_sessionmaker[AsyncSession],
    retention_days: int,
    interval_s: float = PURGE_INTERVAL_S,
    claim: Callable[[float], Awaitable[bool]] | None = None,
) -> None:
    """The first run right away, then every ``interval_s``; a failed run is retried next time. ``claim``
    (a lease for that long) decides which node of a cluster purges this round."""
    while True:
        try:
            if claim is None or await claim(interval_s * 0.9):
                await purge_once(sessions, retention_days)
        except Exception:  # a failed purge (database busy, ...) must not end the task
            log.exception("purging old events and tokens failed")
        await asyncio.sleep(interval_s)
