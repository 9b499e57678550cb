"""Webhook subscriptions repository (the ``subscriptions`` table).

A subscription asks for HTTP callbacks about one channel:

- ``streams``: starts and stops of the HTTP and WebSocket streams whose ``info.source_uuid`` equals the
  subscription's ``channel_uuid`` (stored in the ``key`` column);
- ``enroll`` / ``verify``: enrollment or verification of ``external_id`` on the live stream whose uuid is
  ``channel_uuid``, reported every second while that stream lives.

Each subscription has its own signing secret (``secret``), generated here. The server needs it back to
sign every callback, so it is stored encrypted (``voxgate.store.crypto``: the key lives outside the
database), not hashed; the API shows it only once, in the reply that creates it.
"""

from __future__ import annotations

import secrets as secrets_module
import uuid as uuid_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from voxgate.errors import VoxgateError
from voxgate.store.crypto import seal_in, unseal_in
from voxgate.store.db import DbSessions, unstorable
from voxgate.store.tables import SubscriptionRow

STREAMS = "streams"
ENROLL = "enroll"
VERIFY = "verify"
TYPES = (STREAMS, ENROLL, VERIFY)
STREAM_TYPES = (ENROLL, VERIFY)  # those whose channel is one live stream

MAX_CHANNEL = 256  # widths of the table's columns
MAX_EXTERNAL_ID = 256
MAX_URL = 2048
SECRET_BYTES = 32  # 256 bits, 64 hex characters
MAX_SECRET = 128  # characters of a given secret (the column holds it encrypted)

__all__ = [
    "ENROLL",
    "MAX_SECRET",
    "STREAMS",
    "STREAM_TYPES",
    "TYPES",
    "VERIFY",
    "Subscription",
    "SubscriptionExists",
    "add",
    "find",
    "get",
    "new_secret",
    "remove",
]


class SubscriptionNotFound(VoxgateError):
    """No stored subscription matches."""


class SubscriptionExists(VoxgateError):
    """An identical subscription (type, channel, external_id, URL) is already stored."""

    def __init__(self, message: str, existing: str) -> None:
        super().__init__(message)
        self.existing = existing  # its uuid


@dataclass(frozen=True)
class Subscription:
    uuid: str
    type: str  # one of TYPES
    channel_uuid: str  # a stream's source_uuid (streams) or a stream uuid (enroll, verify)
    external_id: str | None  # enroll and verify only
    url: str
    secret: str = field(repr=False)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


def new_secret() -> str:
    return secrets_module.token_hex(SECRET_BYTES)


def _subscription(session: AsyncSession, row: SubscriptionRow) -> Subscription:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    secret = unseal_in(session, "subscriptions", "secret", row.uuid, row.secret)
    return Subscription(row.uuid, row.type, row.key, row.external_id, row.url, secret, created)


def _check(type: str, channel_uuid: str, url: str, external_id: str | None) -> None:
    """The table's constraints as clear errors (the API validates first; this guards other callers)."""
    if type not in TYPES:
        raise ValueError(f"subscription type must be one of {', '.join(TYPES)}, got {type!r}")
    if not 1 <= len(channel_uuid) <= MAX_CHANNEL:
        raise ValueError(f"channel_uuid must be 1 to {MAX_CHANNEL} characters long")
    if not 1 <= len(url) <= MAX_URL:
        raise ValueError(f"the webhook URL must be 1 to {MAX_URL} characters long")
    if type in STREAM_TYPES:
        if external_id is None or not 1 <= len(external_id) <= MAX_EXTERNAL_ID:
            raise ValueError(
                f"a {type} subscription needs an external_id of 1 to {MAX_EXTERNAL_ID} characters"
            )
    elif external_id is not None:
        raise ValueError("a streams subscription has no external_id")
    if any("\x00" in value for value in (channel_uuid, url, external_id or "")):
        raise ValueError("channel_uuid, webhook URL and external_id must not contain NUL characters")


def _conditions(
    uuid: str | None,
    types: Sequence[str],
    channel_uuid: str | None,
    url: str | None,
    external_id: str | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if uuid is not None:
        conditions.append(SubscriptionRow.uuid == uuid)
    if types:
        conditions.append(SubscriptionRow.type.in_(tuple(types)))
    if channel_uuid is not None:
        conditions.append(SubscriptionRow.key == channel_uuid)
    if url is not None:
        conditions.append(SubscriptionRow.url == url)
    if external_id is not None:
        conditions.append(SubscriptionRow.external_id == external_id)
    return conditions


async def add(
    sessions: DbSessions,
    type: str,
    channel_uuid: str,
    url: str,
    external_id: str | None = None,
    *,
    secret: str | None = None,
) -> Subscription:
    """Store a new subscription with a fresh uuid and secret (unless one is given).

    SubscriptionExists when one with the same type, channel, external_id and URL is stored: a second
    copy would only double every callback.
    """
    _check(type, channel_uuid, url, external_id)
    secret = secret if secret is not None else new_secret()
    if not 1 <= len(secret) <= MAX_SECRET:
        raise ValueError(f"a signing secret must be 1 to {MAX_SECRET} characters long")
    async with sessions() as session, session.begin():
        same = await session.scalar(
            select(SubscriptionRow.uuid).where(*_conditions(None, (type,), channel_uuid, url, external_id))
        )
        if same is not None:
            raise SubscriptionExists(
                f"the same {type} subscription already exists ({same}): delete it first to get a new secret",
                same,
            )
        uuid = str(uuid_module.uuid4())
        row = SubscriptionRow(
            uuid=uuid,
            type=type,
            key=channel_uuid,
            external_id=external_id,
            url=url,
            secret=seal_in(session, "subscriptions", "secret", uuid, secret),
            created=datetime.now(UTC),
        )
        session.add(row)
        await session.flush()
        return _subscription(session, row)


async def get(sessions: DbSessions, uuid: str) -> Subscription | None:
    async with sessions() as session:
        if unstorable(session, uuid):
            return None
        row = await session.get(SubscriptionRow, uuid)
        return None if row is None else _subscription(session, row)


async def find(
    sessions: DbSessions,
    *,
    types: Sequence[str] = (),
    channel_uuid: str | None = None,
    url: str | None = None,
    external_id: str | None = None,
) -> list[Subscription]:
    """The subscriptions matching every given filter (empty ``types``: any type), oldest first."""
    conditions = _conditions(None, types, channel_uuid, url, external_id)
    async with sessions() as session:
        if unstorable(session, channel_uuid, url, external_id, *types):
            return []
        rows = await session.scalars(
            select(SubscriptionRow).where(*conditions).order_by(SubscriptionRow.created, SubscriptionRow.uuid)
        )
        return [_subscription(session, row) for row in rows]


async def remove(
    sessions: DbSessions,
    *,
    uuid: str | None = None,
    types: Sequence[str] = (),
    channel_uuid: str | None = None,
    url: str | None = None,
    external_id: str | None = None,
) -> list[Subscription]:
    """Delete the subscriptions matching every given filter; the ones deleted. At least one of ``uuid``
    and ``channel_uuid`` is required, so that a filter left empty by mistake never deletes them all."""
    if uuid is None and channel_uuid is None:
        raise ValueError("name the subscription (uuid) or its channel (channel_uuid)")
    conditions = _conditions(uuid, types, channel_uuid, url, external_id)
    async with sessions() as session, session.begin():
        if unstorable(session, uuid, channel_uuid, url, external_id, *types):
            return []
        rows = list(await session.scalars(select(SubscriptionRow).where(*conditions)))
        if rows:
            await session.execute(
                delete(SubscriptionRow).where(SubscriptionRow.uuid.in_([row.uuid for row in rows]))
            )
        return [_subscription(session, row) for row in rows]
