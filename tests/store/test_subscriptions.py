from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.postgres import StoreUrls
from voxgate.store import subscriptions
from voxgate.store.crypto import Keyring
from voxgate.store.db import Store
from voxgate.store.subscriptions import ENROLL, STREAMS, VERIFY, SubscriptionExists

STREAM = "3f2b8c1e-7d4a-4e8b-9c0d-5a6b7c8d9e0f"
URL = "https://crm.example.com/hooks"
KEYRING = Keyring.generate()  # the secrets key of every store these tests open

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


@pytest_asyncio.fixture
async def store(store_url: StoreUrls) -> AsyncIterator[Store]:
    opened = await Store(store_url(), KEYRING).open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.asyncio
async def test_add_find_remove(store: Store) -> None:
    sessions = store.sessions
    line = await subscriptions.add(sessions, STREAMS, "crm-line-7", URL)
    enroll = await subscriptions.add(sessions, ENROLL, STREAM, URL, "alice")
    verify = await subscriptions.add(sessions, VERIFY, STREAM, URL + "/v", "alice")
    assert len({line.secret, enroll.secret, verify.secret}) == 3, "a secret per subscription"
    assert all(len(s.secret) == 64 for s in (line, enroll, verify))
    assert "secret" not in repr(line) and line.secret not in repr(line)
    assert line.external_id is None and enroll.external_id == "alice"
    assert line.created.tzinfo is not None

    assert [s.uuid for s in await subscriptions.find(sessions)] == [line.uuid, enroll.uuid, verify.uuid]
    assert await subscriptions.find(sessions, types=(STREAMS,), channel_uuid="crm-line-7") == [line]
    assert [s.uuid for s in await subscriptions.find(sessions, types=subscriptions.STREAM_TYPES)] == [
        enroll.uuid,
        verify.uuid,
    ]
    assert await subscriptions.find(sessions, channel_uuid=STREAM, url=URL) == [enroll]
    assert await subscriptions.get(sessions, verify.uuid) == verify
    assert await subscriptions.get(sessions, "nope") is None

    with pytest.raises(SubscriptionExists) as exists:
        await subscriptions.add(sessions, ENROLL, STREAM, URL, "alice")
    assert exists.value.existing == enroll.uuid
    other = await subscriptions.add(sessions, ENROLL, STREAM, URL, "bob")  # another customer: fine
    assert other.uuid != enroll.uuid

    with pytest.raises(ValueError, match="uuid"):
        await subscriptions.remove(sessions)  # an empty filter never deletes everything
    assert await subscriptions.remove(sessions, channel_uuid=STREAM, types=(VERIFY,)) == [verify]
    assert {s.uuid for s in await subscriptions.remove(sessions, channel_uuid=STREAM)} == {
        enroll.uuid,
        other.uuid,
    }
    assert await subscriptions.remove(sessions, uuid=line.uuid) == [line]
    assert await subscriptions.find(sessions) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("type", "channel", "url", "external_id", "message"),
    [
        ("bogus", "x", URL, None, "type"),
        (STREAMS, "", URL, None, "channel_uuid"),
        (STREAMS, "x" * 257, URL, None, "channel_uuid"),
        (STREAMS, "x", "", None, "URL"),
        (STREAMS, "x", URL, "alice", "no external_id"),
        (ENROLL, STREAM, URL, None, "external_id"),
        (VERIFY, STREAM, URL, "x" * 257, "external_id"),
    ],
)
async def test_refuses_what_the_table_cannot_hold(
    store: Store, type: str, channel: str, url: str, external_id: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await subscriptions.add(store.sessions, type, channel, url, external_id)


@pytest.mark.asyncio
async def test_survive_a_restart(store_url: StoreUrls) -> None:
    first = await Store(store_url(), KEYRING).open()
    try:
        kept = await subscriptions.add(first.sessions, VERIFY, STREAM, URL, "carol", secret="s" * 64)
    finally:
        await first.close()
    second = await Store(store_url(), KEYRING).open()
    try:
        assert await subscriptions.find(second.sessions) == [kept]
        assert (await subscriptions.find(second.sessions))[0].secret == "s" * 64
    finally:
        await second.close()
