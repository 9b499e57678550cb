"""What a store keeps is the same on SQLite and PostgreSQL, where the two databases differ underneath:
text without NUL characters (PostgreSQL's text has none), strings within their columns' widths (PostgreSQL
enforces them, SQLite does not), 64-bit event ids (PostgreSQL's SERIAL is 32-bit), and the migrations
from empty to the newest and back down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.postgres import PostgresServer, StoreUrls
from voxgate.biometrics.profile import shipped_profile, shipped_profiles
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.errors import ProfileError, VoiceprintError, VoiceprintNotFound
from voxgate.store import accounts, events, pbx, profiles, subscriptions, voiceprints
from voxgate.store.crypto import Keyring
from voxgate.store.db import Store, alembic_config
from voxgate.store.pbx import PbxNotFound
from voxgate.store.profiles import ProfileNotFound
from voxgate.store.tables import Base

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)

NUL = "a\x00b"


def _vp() -> Voiceprint:
    vector = l2_normalise(np.random.default_rng(1).standard_normal(8).astype(np.float32))
    return Voiceprint({"ecapa": Embedding("ecapa", "v1", vector)}, 20.0)


@pytest.mark.asyncio
async def test_a_nul_character_is_not_found_refused_or_replaced_alike(store_url: StoreUrls) -> None:
    store = await Store(store_url(), Keyring.generate()).open()
    s = store.sessions
    try:
        # lookups: nothing stored has one, so nothing is found (PostgreSQL is not even asked)
        with pytest.raises(VoiceprintNotFound):
            await voiceprints.get(s, NUL)
        with pytest.raises(VoiceprintNotFound):
            await voiceprints.delete(s, NUL)
        assert not await accounts.check_password(s, NUL, "password")
        assert (await events.find(s, events.EventFilter(external_id=NUL, types=(NUL,)))).total == 0
        assert await subscriptions.get(s, NUL) is None
        assert await subscriptions.find(s, channel_uuid=NUL, url=NUL, external_id=NUL) == []
        assert await subscriptions.remove(s, uuid=NUL, channel_uuid=NUL) == []
        for call in (pbx.get, pbx.delete):
            with pytest.raises(PbxNotFound):
                await call(s, NUL)
        with pytest.raises(ProfileNotFound):
            await profiles.get_profile(s, NUL)
        # writes: refused with the domain's errors (a snapshot or backup could not carry them either)
        with pytest.raises(VoiceprintError, match="NUL"):
            await voiceprints.add(s, NUL, _vp(), {})
        with pytest.raises(ValueError, match="NUL"):
            await subscriptions.add(s, "verify", NUL, "https://x/h", "alice")
        # the event log keeps what a request carried, the NUL shown as U+FFFD
        await events.record(s, events.VERIFY, NUL, stream_uuid=NUL, external_id=NUL, note=NUL)
        (event,) = (await events.find(s, events.EventFilter())).events
        assert event.outcome == event.stream_uuid == event.external_id == "a\ufffdb"
        assert event.detail == {"note": NUL}, "JSON holds it escaped"
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_profile_name_longer_than_its_column_is_refused(store_url: StoreUrls) -> None:
    store = await Store(store_url()).open()
    try:
        profile = shipped_profile(shipped_profiles()[0])
        with pytest.raises(ProfileError, match="256"):
            await profiles.add_profile(store.sessions, profile, name="n" * 257)
        with pytest.raises(ProfileError, match="NUL"):
            await profiles.add_profile(store.sessions, profile, name=NUL)
        stored = await profiles.add_profile(store.sessions, profile, name="n" * 256)
        assert stored.name == "n" * 256
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_event_ids_go_past_32_bits(store_url: StoreUrls) -> None:
    store = await Store(store_url()).open()
    try:
        async with store.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT setval('events_id_seq', 3000000000)"))
            else:
                await connection.execute(
                    text("INSERT INTO events (id, time, type, outcome, detail) VALUES (3000000000, :t, 'x', 'ok', '{}')"),
                    {"t": datetime(2025, 1, 1, tzinfo=UTC)},
                )
        await events.record(store.sessions, events.LOGIN)
        page = await events.find(store.sessions, events.EventFilter(types=(events.LOGIN,)))
        assert [e.id for e in page.events] == [3000000001]
    finally:
        await store.close()


def test_migrations_go_down_to_empty_and_up_again(store_url: StoreUrls) -> None:
    def tables(connection: Connection) -> list[str]:
        return sorted(set(inspect(connection).get_table_names()) - {"alembic_version"})

    def walk(connection: Connection) -> tuple[list[str], list[str]]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        empty = tables(connection)
        command.upgrade(config, "head")
        return empty, tables(connection)

    async def run() -> tuple[list[str], list[str]]:
        store = await Store(store_url()).open()
        try:
            async with store.engine.begin() as connection:
                return await connection.run_sync(walk)
        finally:
            await store.close()

    empty, full = asyncio.run(run())
    assert empty == [] and full == sorted(Base.metadata.tables)


@pytest.mark.postgresql
@pytest.mark.asyncio
async def test_nodes_starting_at_once_on_one_empty_postgresql_database(postgres_server: PostgresServer) -> None:
    """Cluster nodes start together on a new database: the migrations run once (the others wait for them),
    the shipped profiles are stored once, and exactly one account is created. (SQLite, one box, is not
    opened by several processes at once.)"""
    url = postgres_server.create_database("nodes_at_once")
    nodes = [Store(url) for _ in range(4)]
    try:
        await asyncio.gather(*(node.open() for node in nodes))
        added = await asyncio.gather(*(profiles.ensure_shipped(node.sessions) for node in nodes))
        assert sum(added) == len(shipped_profiles())
        created = await asyncio.gather(
            *(accounts.create_account(node.sessions, f"admin{i}", "password") for i, node in enumerate(nodes))
        )
        assert sorted(created) == [False, False, False, True]
        async with nodes[0].engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM users"))).scalar() == 1
    finally:
        for node in nodes:
            await node.close()
        postgres_server.drop_database("nodes_at_once")
