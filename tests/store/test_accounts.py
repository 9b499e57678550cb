from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from sqlalchemy import select

from tests.postgres import StoreUrls
from voxgate.store import accounts
from voxgate.store.db import Store
from voxgate.store.tables import TokenRow, UserRow

DAY = timedelta(days=1)

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the smallest cost: the behaviour under test is the same, 100x faster."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest_asyncio.fixture
async def store(store_url: StoreUrls) -> AsyncIterator[Store]:
    opened = await Store(store_url()).open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.asyncio
async def test_the_account_is_created_once(store: Store) -> None:
    assert await accounts.account_name(store.sessions) is None
    assert await accounts.create_account(store.sessions, "admin", "first password")
    assert not await accounts.create_account(store.sessions, "admin", "second password")
    assert not await accounts.create_account(store.sessions, "other", "third password"), "one account only"
    assert await accounts.account_name(store.sessions) == "admin"
    assert await accounts.check_password(store.sessions, "admin", "first password")
    assert not await accounts.check_password(store.sessions, "admin", "second password")


@pytest.mark.asyncio
async def test_concurrent_first_starts_create_one_account(store: Store) -> None:
    created = await asyncio.gather(
        *(accounts.create_account(store.sessions, "admin", f"pw-{i}-xxxx") for i in range(3))
    )
    assert sorted(created) == [False, False, True]
    async with store.sessions() as session:
        assert len((await session.scalars(select(UserRow))).all()) == 1


@pytest.mark.asyncio
async def test_password_is_argon2_and_tokens_are_stored_hashed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher())  # the production parameters
    await accounts.create_account(store.sessions, "admin", "a password")
    token = await accounts.issue_token(store.sessions, "admin", DAY)
    async with store.sessions() as session:
        user = await session.scalar(select(UserRow))
        rows = (await session.scalars(select(TokenRow))).all()
    assert user is not None and user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "a password" not in user.password_hash
    assert [row.token_hash for row in rows] != [token] and len(rows[0].token_hash) == 64
    assert await accounts.user_for_token(store.sessions, token) == "admin"
    assert await accounts.user_for_token(store.sessions, token + "x") is None


@pytest.mark.asyncio
async def test_wrong_or_unknown_credentials(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "a password")
    assert not await accounts.check_password(store.sessions, "admin", "A password")
    assert not await accounts.check_password(store.sessions, "nobody", "a password")
    assert not await accounts.check_password(store.sessions, "admin", "")


@pytest.mark.asyncio
async def test_expired_tokens_are_refused_and_purged(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "a password")
    expired = await accounts.issue_token(store.sessions, "admin", timedelta(seconds=-1))
    valid = await accounts.issue_token(store.sessions, "admin", DAY)
    assert await accounts.user_for_token(store.sessions, expired) is None
    assert await accounts.purge_expired(store.sessions) == 1
    assert await accounts.purge_expired(store.sessions) == 0
    assert await accounts.user_for_token(store.sessions, valid) == "admin"


@pytest.mark.asyncio
async def test_revoke_one_token(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "a password")
    first = await accounts.issue_token(store.sessions, "admin", DAY)
    second = await accounts.issue_token(store.sessions, "admin", DAY)
    await accounts.revoke_token(store.sessions, first)
    assert await accounts.user_for_token(store.sessions, first) is None
    assert await accounts.user_for_token(store.sessions, second) == "admin"


@pytest.mark.asyncio
async def test_change_password_keeps_the_callers_token_unchanged(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "old password")
    mine = await accounts.issue_token(store.sessions, "admin", timedelta(hours=3))
    other = await accounts.issue_token(store.sessions, "admin", DAY)
    async with store.sessions() as session:
        before = (await session.scalars(select(TokenRow).order_by(TokenRow.id))).all()[0]

    await accounts.change_password(store.sessions, "admin", "new password", keep_token=mine)

    assert await accounts.user_for_token(store.sessions, mine) == "admin"
    assert await accounts.user_for_token(store.sessions, other) is None
    async with store.sessions() as session:
        rows = (await session.scalars(select(TokenRow))).all()
    assert [(r.id, r.token_hash, r.expires) for r in rows] == [
        (before.id, before.token_hash, before.expires)
    ], "the caller's token is the same row, same expiry: nothing re-issued"
    assert await accounts.check_password(store.sessions, "admin", "new password")
    assert not await accounts.check_password(store.sessions, "admin", "old password")


@pytest.mark.asyncio
async def test_change_password_without_a_token_to_keep_revokes_all(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "old password")
    token = await accounts.issue_token(store.sessions, "admin", DAY)
    await accounts.change_password(store.sessions, "admin", "new password", keep_token=None)
    assert await accounts.user_for_token(store.sessions, token) is None
    with pytest.raises(LookupError):
        await accounts.change_password(store.sessions, "nobody", "new password", keep_token=None)


@pytest.mark.asyncio
async def test_set_password_revokes_every_token(store: Store) -> None:
    await accounts.create_account(store.sessions, "admin", "old password")
    tokens = [await accounts.issue_token(store.sessions, "admin", DAY) for _ in range(2)]
    before = datetime.now(UTC)
    await accounts.set_password(store.sessions, "admin", "reset password")
    for token in tokens:
        assert await accounts.user_for_token(store.sessions, token) is None
    assert await accounts.check_password(store.sessions, "admin", "reset password")
    async with store.sessions() as session:
        user = await session.scalar(select(UserRow))
    assert user is not None and user.password_changed.replace(tzinfo=UTC) >= before


@pytest.mark.asyncio
async def test_issue_token_for_an_unknown_account(store: Store) -> None:
    with pytest.raises(LookupError):
        await accounts.issue_token(store.sessions, "nobody", DAY)


def test_generated_passwords_are_long_and_different() -> None:
    passwords = {accounts.generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) >= 24 for p in passwords)


@pytest.mark.asyncio
async def test_a_hash_with_weaker_parameters_is_upgraded_at_the_next_login(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accounts.create_account(store.sessions, "admin", "a password")  # cheap parameters
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert await accounts.check_password(store.sessions, "admin", "a password")
    async with store.sessions() as session:
        user = await session.scalar(select(UserRow))
    assert user is not None and "m=2048,t=2,p=1" in user.password_hash
    assert await accounts.check_password(store.sessions, "admin", "a password")
