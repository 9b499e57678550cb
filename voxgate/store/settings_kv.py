"""Runtime settings that live in the store (the ``settings`` table): small JSON values by key.

They survive restarts and travel in backups, unlike the ``VOXGATE_*`` configuration of a process.
Known keys are the constants below; values are any JSON (``None`` is stored as JSON null).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.store.tables import SettingRow

MAINTENANCE = "maintenance"  # bool: maintenance mode (new streams, enroll, verify, import refused)
ACTIVE_PROFILE = "active_profile"  # str | None: uuid of the active calibration profile; None = automatic
# str: id of the key the store's secrets are encrypted with (voxgate.store.crypto); state of this store,
# not data: never in a backup
SECRETS_KEY_ID = "secrets_key_id"

__all__ = ["ACTIVE_PROFILE", "MAINTENANCE", "SECRETS_KEY_ID", "get", "get_in", "items", "set", "set_in"]


async def get_in(session: AsyncSession, key: str, default: Any = None) -> Any:
    """The value of ``key`` read inside an open session (and its transaction), else ``default``."""
    row = await session.get(SettingRow, key)
    return default if row is None else row.value


async def set_in(session: AsyncSession, key: str, value: Any) -> None:
    """Write ``key`` inside an open transaction (the caller commits)."""
    row = await session.get(SettingRow, key)
    if row is None:
        session.add(SettingRow(key=key, value=value))
    else:
        row.value = value


async def get(sessions: async_sessionmaker[AsyncSession], key: str, default: Any = None) -> Any:
    """The stored value of ``key``, or ``default`` when it was never set."""
    async with sessions() as session:
        return await get_in(session, key, default)


async def set(sessions: async_sessionmaker[AsyncSession], key: str, value: Any) -> None:
    """Store ``value`` under ``key`` (insert or replace), committed before returning."""
    async with sessions() as session, session.begin():
        await set_in(session, key, value)


async def items(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Every stored setting, by key."""
    async with sessions() as session:
        rows = await session.scalars(select(SettingRow).order_by(SettingRow.key))
        return {row.key: row.value for row in rows}
