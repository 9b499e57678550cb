"""Secrets at rest: the two values the server must be able to read back (a webhook subscription's signing
secret, a PBX instance's SIP password) are stored encrypted with a key kept outside the database.

The cipher is AES-256-GCM (``cryptography``), authenticated: a stored value that was altered, or that
was moved to another row or column, does not decrypt. A stored value reads::

    enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>

``v1`` names this format (a later one gets another prefix); the key id (8 hex digits of a hash of the key,
not the key) says which key sealed it, so a start with the wrong key names both keys instead of failing
on the first read. The associated data is ``<table>.<column>/<row uuid>``. A value without the prefix is
a plain one from a store older than encryption; :func:`reseal` encrypts those at start.

The repositories find the :class:`Keyring` on the session (``Store(url, keyring)`` or
:meth:`voxgate.store.db.Store.use_keyring` puts it there); the service layer decides where the key comes
from (``VOXGATE_SECRET_KEY`` or the key file) and calls :func:`reseal` before anything reads a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.errors import ServiceError
from voxgate.store import settings_kv
from voxgate.store.tables import Base

log = logging.getLogger(__name__)

PREFIX = "enc:v1:"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
KEYRING_INFO = "voxgate.keyring"  # the key of the keyring in a session's ``info``
# The stored secrets: (table, column), each table keyed by its ``uuid`` column.
SEALED_COLUMNS = (("subscriptions", "secret"), ("pbx", "password"))

__all__ = [
    "KEY_BYTES",
    "PREFIX",
    "SEALED_COLUMNS",
    "Keyring",
    "SecretKeyError",
    "SecretsSurvey",
    "is_sealed",
    "key_id",
    "keyring_of",
    "new_key",
    "parse_key",
    "reseal",
    "sealed_key_id",
    "survey",
]


class SecretKeyError(Exception):
    """The secrets key does not fit the store (missing, wrong, malformed): voxgate refuses to start.

    Not a :class:`~voxgate.errors.VoxgateError`: no request can cause it, so it has no HTTP status. The
    CLI prints it and exits with code 2, as for a bad setting."""


def parse_key(text: str, what: str) -> bytes:
    """A key written as base64 (standard or URL-safe alphabet, padding optional) of 32 bytes."""
    cleaned = "".join(text.split())
    try:
        raw = base64.urlsafe_b64decode(
            cleaned.replace("+", "-").replace("/", "_") + "=" * (-len(cleaned) % 4)
        )
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES or not cleaned:
        raise ValueError(
            f"{what} must be {KEY_BYTES} random bytes in base64 (44 characters), e.g. from "
            '`python -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"`'
        )
    return raw


def new_key() -> str:
    """A fresh random key, as written to the key file and accepted by ``VOXGATE_SECRET_KEY``."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """8 hex digits naming a key in stored values and messages (a hash: it tells nothing of the key)."""
    return hashlib.sha256(b"voxgate secrets key id\x00" + key).hexdigest()[:8]


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def sealed_key_id(stored: str) -> str | None:
    """The id of the key that sealed ``stored``; None for a plain value."""
    if not is_sealed(stored):
        return None
    return stored[len(PREFIX) :].split(":", 1)[0]


def context(table: str, column: str, uuid: str) -> str:
    return f"{table}.{column}/{uuid}"


@dataclass(frozen=True)
class Keyring:
    """The key that seals, and an optional previous one that is only read (key rotation)."""

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for key in (self.current, self.previous):
            if key is not None and len(key) != KEY_BYTES:
                raise ValueError(f"a secrets key is {KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring with a random key (tests, and a store that is thrown away)."""
        return cls(os.urandom(KEY_BYTES))

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    @property
    def previous_id(self) -> str | None:
        return None if self.previous is None else key_id(self.previous)

    def _key(self, kid: str) -> bytes | None:
        if kid == self.current_id:
            return self.current
        if self.previous is not None and kid == self.previous_id:
            return self.previous
        return None

    def seal(self, value: str, where: str) -> str:
        """``value`` encrypted with the current key, bound to ``where`` (table.column/uuid)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.current).encrypt(nonce, value.encode("utf-8"), where.encode("utf-8"))
        token = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{PREFIX}{self.current_id}:{token}"

    def unseal(self, stored: str, where: str) -> str:
        """The plain value of a stored one (a plain value from an older store is returned as it is).

        Raises ValueError naming the problem when the value does not decrypt with either key."""
        if not is_sealed(stored):
            return stored
        kid, _, token = stored[len(PREFIX) :].partition(":")
        key = self._key(kid)
        if key is None:
            raise ValueError(
                f"{where} was encrypted with secrets key {kid}, not with the configured key "
                f"{self.current_id}" + (f" nor the previous key {self.previous_id}" if self.previous else "")
            )
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if len(raw) < NONCE_BYTES + 16:
                raise ValueError("too short")
            plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode("utf-8"))
            return plain.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{where} does not decrypt with secrets key {kid}: the stored value was altered or "
                "copied from another row"
            ) from exc


def keyring_of(session: AsyncSession) -> Keyring:
    """The keyring of the store this session belongs to."""
    keyring = session.info.get(KEYRING_INFO)
    if not isinstance(keyring, Keyring):
        raise RuntimeError("the store was opened without its secrets key (Store(url, keyring))")
    return keyring


def seal_in(session: AsyncSession, table: str, column: str, uuid: str, value: str) -> str:
    return keyring_of(session).seal(value, context(table, column, uuid))


def unseal_in(session: AsyncSession, table: str, column: str, uuid: str, stored: str) -> str:
    """A stored secret read back; ServiceError (503) if it does not decrypt. The start-up check makes
    that impossible unless another process with another key wrote it since (several nodes, one store,
    different ``VOXGATE_SECRET_KEY``)."""
    try:
        return keyring_of(session).unseal(stored, context(table, column, uuid))
    except ValueError as exc:
        raise ServiceError(f"a stored secret cannot be read: {exc}") from exc


# -- the start-up step ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretsSurvey:
    """What the store holds: the key id it records, how many secrets each key sealed, how many are plain."""

    recorded: str | None  # the ``secrets_key_id`` setting: the key that sealed the store last
    sealed: dict[str, int]  # key id -> number of values
    plain: int

    @property
    def key_ids(self) -> set[str]:
        """Every key the store needs (recorded or sealing a value)."""
        return set(self.sealed) | ({self.recorded} if self.recorded else set())


def _column(table: str, name: str) -> Column[Any]:
    return Base.metadata.tables[table].c[name]


async def survey(sessions: async_sessionmaker[AsyncSession]) -> SecretsSurvey:
    async with sessions() as session:
        recorded = await settings_kv.get_in(session, settings_kv.SECRETS_KEY_ID)
        sealed: Counter[str] = Counter()
        plain = 0
        for table, column in SEALED_COLUMNS:
            for stored in await session.scalars(select(_column(table, column))):
                kid = sealed_key_id(stored)
                if kid is None:
                    plain += 1
                else:
                    sealed[kid] += 1
    return SecretsSurvey(recorded if isinstance(recorded, str) else None, dict(sealed), plain)


@dataclass(frozen=True)
class Resealed:
    encrypted: int  # plain values encrypted
    rotated: int  # values moved from the previous key to the current one


async def reseal(sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> Resealed:
    """Check that every stored secret decrypts, encrypt the plain ones, move the ones sealed with the
    previous key to the current key, and record the current key's id; all in one transaction.

    SecretKeyError (nothing changed) if a value was sealed with another key or does not decrypt, or the
    store records another key.
    """
    async with sessions() as session:
        sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
        secure_delete = None
        if sqlite:  # zero the space the replaced values leave, not only mark it free
            secure_delete = (await session.execute(text("PRAGMA secure_delete"))).scalar()
            await session.execute(text("PRAGMA secure_delete=ON"))
        try:
            try:
                encrypted, rotated = await _reseal_in(session, keyring)
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
            if sqlite and (encrypted or rotated):
                await _scrub(session, vacuum=encrypted > 0)
        finally:
            if sqlite:
                await session.execute(text(f"PRAGMA secure_delete={int(secure_delete or 0)}"))
                await session.commit()
    return Resealed(encrypted, rotated)


async def _scrub(session: AsyncSession, *, vacuum: bool) -> None:
    """SQLite: no copy of a replaced value stays in the files. ``vacuum`` (once, when an older store's
    plain secrets were encrypted): the file is rebuilt, since its free pages may still hold them (the
    table copy of migration 0004, subscriptions deleted before). Then a checkpoint copies the new pages
    over the old ones and the WAL is truncated."""
    if vacuum:
        log.info("rebuilding the store (VACUUM) so that no plain-text secret stays in its free pages")
        connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        await connection.exec_driver_sql("VACUUM")
        await session.commit()
    busy, _, _ = (await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).one()
    await session.commit()
    if busy:
        log.warning("the WAL checkpoint after re-encrypting secrets was blocked; old values may linger in it")


async def _reseal_in(session: AsyncSession, keyring: Keyring) -> tuple[int, int]:
    encrypted = rotated = 0
    recorded = await settings_kv.get_in(session, settings_kv.SECRETS_KEY_ID)
    if isinstance(recorded, str) and recorded not in (keyring.current_id, keyring.previous_id):
        raise SecretKeyError(
            f"the store's secrets were encrypted with key {recorded}, but the configured key is "
            f"{keyring.current_id}: configure key {recorded} (VOXGATE_SECRET_KEY or the key file), or "
            "to rotate, give it as VOXGATE_SECRET_KEY_PREVIOUS"
        )
    for table, name in SEALED_COLUMNS:
        column = _column(table, name)
        uuid_column = Base.metadata.tables[table].c["uuid"]
        rows = (await session.execute(select(uuid_column, column))).all()
        for uuid, stored in rows:
            where = context(table, name, uuid)
            kid = sealed_key_id(stored)
            try:
                plain = keyring.unseal(stored, where)
            except ValueError as exc:
                raise SecretKeyError(
                    f"{exc}. Configure the key the store was encrypted with "
                    "(VOXGATE_SECRET_KEY or the key file), or give it as VOXGATE_SECRET_KEY_PREVIOUS "
                    "to rotate"
                ) from exc
            if kid == keyring.current_id:
                continue
            if kid is None:
                encrypted += 1
            else:
                rotated += 1
            await session.execute(
                update(Base.metadata.tables[table])
                .where(uuid_column == uuid)
                .values({name: keyring.seal(plain, where)})
            )
    if recorded != keyring.current_id:
        await settings_kv.set_in(session, settings_kv.SECRETS_KEY_ID, keyring.current_id)
    return encrypted, rotated
