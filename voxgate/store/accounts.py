"""The API account and its tokens.

Voice Verify has exactly one account; the table could hold more, but everything here treats the first
account as *the* account (:func:`account_name`).

- Passwords are hashed with Argon2 (argon2-cffi's defaults, RFC 9106 low-memory profile). Hashing takes
  about 0.2 s of CPU and 64 MiB, so it runs off the event loop (:func:`asyncio.to_thread`, whose pool is
  bounded) and is never done for a refused (throttled) attempt.
- Tokens are random (32 bytes, URL-safe), shown once at login and stored only as their sha256, so a copy
  of the database (or a backup) holds no usable token. Tokens expire (the lifetime is the caller's).
- A password change revokes every token but the caller's own, which keeps its expiry. A reset (CLI or
  loopback HTTP) revokes every token.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from voxgate.store.cache import TtlCache
from voxgate.store.db import DbSessions, unstorable
from voxgate.store.tables import TokenRow, UserRow

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; a bound keeps a request from carrying megabytes
MAX_USERNAME_LENGTH = 150  # users.username is String(150), as Django's

_hasher = PasswordHasher()



def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def generate_password() -> str:
    """A random password: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


async def _hash(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def account_name(sessions: DbSessions) -> str | None:
    """The username of the account (the first one created), or None on a store without one."""
    async with sessions() as session:
        return await session.scalar(select(UserRow.username).order_by(UserRow.id).limit(1))


async def create_account(sessions: DbSessions, username: str, password: str) -> bool:
    """Create the account if the store has none yet; True if this call created it.

    Safe when several processes start at once on one database: exactly one of them creates it.
    """
    if await account_name(sessions) is not None:
        return False
    password_hash = await _hash(password)
    try:
        async with sessions() as session, session.begin():
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                # nodes starting at once with different VOXGATE_ADMIN_USER: without the lock each would see
                # no account and insert its own (READ COMMITTED); the lock makes the later ones see the first
                await session.execute(text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
            if await session.scalar(select(func.count()).select_from(UserRow)):
                return False
            session.add(
                UserRow(username=username, password_hash=password_hash, password_changed=datetime.now(UTC))
            )
    except IntegrityError:  # another process created it between our check and our insert
        return False
    return True


async def _set_password(sessions: DbSessions, username: str, password: str) -> None:
    """Create the account or replace its password; every existing token of the account is revoked."""
    password_hash = await _hash(password)
    async with sessions() as session, session.begin():
        user = await session.scalar(select(UserRow).where(UserRow.username == username))
        now = datetime.now(UTC)
        if user is None:
            session.add(UserRow(username=username, password_hash=password_hash, password_changed=now))
            return
        user.password_hash = password_hash
        user.password_changed = now
        await session.execute(delete(TokenRow).where(TokenRow.user_id == user.id))


async def check_password(sessions: DbSessions, username: str, password: str) -> bool:
    """Whether the password is the account's; the same Argon2 cost whether or not the user exists."""
    async with sessions() as session:
        user = None
        if not unstorable(session, username):
            user = await session.scalar(select(UserRow).where(UserRow.username == username))
    if user is None:
        await _hash(password)  # same cost whether or not the user exists
        return False
    ok = await asyncio.to_thread(_verify, user.password_hash, password)
    if ok and _hasher.check_needs_rehash(user.password_hash):  # hashing parameters were raised
        new_hash = await _hash(password)
        async with sessions() as session, session.begin():
            row = await session.get(UserRow, user.id)
            if row is not None and row.password_hash == user.password_hash:
                row.password_hash = new_hash
    return ok


async def issue_token(sessions: DbSessions, username: str, lifetime: timedelta) -> str:
    """A new token for the account, valid for ``lifetime``; only its sha256 is stored."""
    token = secrets.token_urlsafe(32)
    async with sessions() as session, session.begin():
        user_id = await session.scalar(select(UserRow.id).where(UserRow.username == username))
        if user_id is None:
            raise LookupError(f"no account {username!r}")
        now = datetime.now(UTC)
        session.add(TokenRow(user_id=user_id, token_hash=_digest(token), created=now, expires=now + lifetime))
    return token


_tokens: TtlCache[tuple[int, str], str] = TtlCache()  # valid tokens only, by (store, digest)


def forget_cached() -> None:
    """Drop cached token checks (after a logout, a password change or reset, a purge)."""
    _tokens.clear()


async def user_for_token(sessions: DbSessions, token: str) -> str | None:
    """The username a valid, unexpired token belongs to, else None. A valid answer is cached briefly
    (never past the token's expiry): every API request asks."""
    key = (id(sessions), _digest(token))
    cached = _tokens.get(key)
    if cached is not None:
        return cached
    async with sessions() as session:
        row = (
            await session.execute(
                select(UserRow.username, TokenRow.expires)
                .join(TokenRow, TokenRow.user_id == UserRow.id)
                .where(TokenRow.token_hash == _digest(token))
            )
        ).first()
    if row is None:
        return None
    remaining_s = (_aware(row.expires) - datetime.now(UTC)).total_seconds()
    if remaining_s <= 0:
        return None
    _tokens.put(key, str(row.username), ttl_s=remaining_s)
    return str(row.username)


async def _revoke_token(sessions: DbSessions, token: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(TokenRow).where(TokenRow.token_hash == _digest(token)))


async def _change_password(
    sessions: DbSessions, username: str, new_password: str, keep_token: str | None
) -> None:
    """New password; every token of the account but ``keep_token`` (the caller's own) is revoked.

    The kept token is the same row: same expiry, nothing re-issued. One transaction.
    """
    password_hash = await _hash(new_password)
    async with sessions() as session, session.begin():
        user = await session.scalar(select(UserRow).where(UserRow.username == username))
        if user is None:
            raise LookupError(f"no account {username!r}")
        user.password_hash = password_hash
        user.password_changed = datetime.now(UTC)
        revoke = delete(TokenRow).where(TokenRow.user_id == user.id)
        if keep_token is not None:
            revoke = revoke.where(TokenRow.token_hash != _digest(keep_token))
        await session.execute(revoke)


async def _purge_expired(sessions: DbSessions) -> int:
    """Delete expired tokens; the number deleted."""
    async with sessions() as session, session.begin():
        result = await session.execute(delete(TokenRow).where(TokenRow.expires <= datetime.now(UTC)))
    return int(cast(CursorResult[Any], result).rowcount)


# -- writes that revoke tokens clear the token cache once they committed -------------------------------------


async def set_password(sessions: DbSessions, username: str, password: str) -> None:
    try:
        await _set_password(sessions, username, password)
    finally:
        forget_cached()


async def revoke_token(sessions: DbSessions, token: str) -> None:
    try:
        await _revoke_token(sessions, token)
    finally:
        forget_cached()


async def change_password(
    sessions: DbSessions, username: str, new_password: str, keep_token: str | None
) -> None:
    """New password; every token of the account but ``keep_token`` (the caller's own) is revoked."""
    try:
        await _change_password(sessions, username, new_password, keep_token)
    finally:
        forget_cached()


async def purge_expired(sessions: DbSessions) -> int:
    try:
        return await _purge_expired(sessions)
    finally:
        forget_cached()
