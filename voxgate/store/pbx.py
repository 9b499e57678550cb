"""PBX instances in the store: the SIP accounts voxgate registers with, and whether each is started.

The configuration is one JSON document per instance (host, port, transport, username, domain,
registration expiry, contact user, RTP port range, codecs, ...); the password sits in its own column so
nothing that lists instances can hand it out by accident. ``started`` is what the server restores at
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
from voxgate.store.tables import PbxRow

__all__ = ["PbxNotFound", "PbxRecord", "create", "delete", "get", "list_all", "set_started"]


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


def _record(row: PbxRow) -> PbxRecord:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    return PbxRecord(row.uuid, row.name, dict(row.config), row.password, bool(row.started), created)


async def create(
    sessions: async_sessionmaker[AsyncSession], name: str, config: dict[str, Any], password: str
) -> PbxRecord:
    row = PbxRow(
        uuid=str(uuid_module.uuid4()),
        name=name,
        config=config,
        password=password,
        started=False,
        created=datetime.now(UTC),
    )
    async with sessions() as session, session.begin():
        session.add(row)
    return _record(row)


async def list_all(sessions: async_sessionmaker[AsyncSession]) -> list[PbxRecord]:
    """Every instance, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(select(PbxRow).order_by(PbxRow.created, PbxRow.uuid))
        return [_record(row) for row in rows]


async def get(sessions: async_sessionmaker[AsyncSession], pbx_id: str) -> PbxRecord:
    async with sessions() as session:
        row = await session.get(PbxRow, pbx_id)
        if row is None:
            raise PbxNotFound(f"no PBX instance {pbx_id!r}")
        return _record(row)


async def set_started(sessions: async_sessionmaker[AsyncSession], pbx_id: str, started: bool) -> None:
    async with sessions() as session, session.begin():
        row = await session.get(PbxRow, pbx_id)
        if row is None:
            raise PbxNotFound(f"no PBX instance {pbx_id!r}")
        row.started = started


async def delete(sessions: async_sessionmaker[AsyncSession], pbx_id: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.get(PbxRow, pbx_id)
        if row is None:
            raise PbxNotFound(f"no PBX instance {pbx_id!r}")
        await session.delete(row)
