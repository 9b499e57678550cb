"""PBX instances in the store: the SIP accounts voxgate registers with, and whether each is started.

The configuration is one JSON document per instance (host, port, transport, username, domain,
registration expiry, contact user, RTP port range, codecs, ...); the password sits in its own column so
nothing that lists instances can hand it out by accident, encrypted (``voxgate.store.crypto``: the key
lives outside the database) since the SIP agent needs it back to answer digest challenges. ``started`` is what the server restores at
start: an instance started through the API registers again after a restart, a stopped one does not.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.errors import VoxgateError
from voxgate.store.crypto import seal_in, unseal_in
from voxgate.store.db import unstorable
from voxgate.store.tables import PbxRow

MAX_PASSWORD = 256  # characters (the column holds it encrypted)

__all__ = ["MAX_PASSWORD", "PbxNotFound", "PbxRecord", "create", "delete", "get", "list_all", "set_started"]


class PbxNotFound(VoxgateError):
    """No stored PBX instance has that id."""


@dataclass(frozen=True)
class PbxRecord:
    uuid: str
    name: str
    config: dict[str, Any]
    password: str
    started: bool
    created: datetime


def _record(session: AsyncSession, row: PbxRow) -> PbxRecord:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    password = unseal_in(session, "pbx", "password", row.uuid, row.password)
    return PbxRecord(row.uuid, row.name, dict(row.config), password, bool(row.started), created)


async def create(
    sessions: async_sessionmaker[AsyncSession], name: str, config: dict[str, Any], password: str
) -> PbxRecord:
    if not 1 <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a SIP password must be 1 to {MAX_PASSWORD} characters long")
    uuid = str(uuid_module.uuid4())
    created = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(
            PbxRow(
                uuid=uuid,
                name=name,
                config=config,
                password=seal_in(session, "pbx", "password", uuid, password),
                started=False,
                created=created,
            )
        )
    return PbxRecord(uuid, name, dict(config), password, False, created)


async def _row(session: AsyncSession, pbx_id: str) -> PbxRow:
    row = None if unstorable(session, pbx_id) else await session.get(PbxRow, pbx_id)
    if row is None:
        raise PbxNotFound(f"no PBX instance {pbx_id!r}")
    return row


async def list_all(sessions: async_sessionmaker[AsyncSession]) -> list[PbxRecord]:
    """Every instance, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(select(PbxRow).order_by(PbxRow.created, PbxRow.uuid))
        return [_record(session, row) for row in rows]


async def get(sessions: async_sessionmaker[AsyncSession], pbx_id: str) -> PbxRecord:
    async with sessions() as session:
        row = await _row(session, pbx_id)
        return _record(session, row)


async def set_started(sessions: async_sessionmaker[AsyncSession], pbx_id: str, started: bool) -> None:
    async with sessions() as session, session.begin():
        row = await _row(session, pbx_id)
        row.started = started


async def delete(sessions: async_sessionmaker[AsyncSession], pbx_id: str) -> None:
    async with sessions() as session, session.begin():
        row = await _row(session, pbx_id)
        await session.delete(row)
