from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sqlalchemy import inspect, text

from tests.postgres import StoreUrls
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.errors import VoiceprintExists, VoiceprintNotFound
from voxgate.store import voiceprints
from voxgate.store.db import Store
from voxgate.store.tables import Base

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


def _vp(seed: int) -> Voiceprint:
    rng = np.random.default_rng(seed)
    return Voiceprint(
        {
            m: Embedding(m, "v1", l2_normalise(rng.standard_normal(192).astype(np.float32)))
            for m in ("ecapa", "campplus")
        },
        25.0,
    )


def test_add_get_delete(store_url: StoreUrls) -> None:
    async def run() -> None:
        store = await Store(store_url()).open()
        try:
            original = _vp(1)
            await voiceprints.add(store.sessions, "customer-1", original, {"kind": "recordings"})
            got = await voiceprints.get(store.sessions, "customer-1")
            for model in ("ecapa", "campplus"):
                np.testing.assert_allclose(
                    got.voiceprint.embeddings[model].vector, original.embeddings[model].vector
                )
            assert got.voiceprint.speech_s == 25.0 and got.source == {"kind": "recordings"}
            with pytest.raises(VoiceprintExists):
                await voiceprints.add(store.sessions, "customer-1", _vp(2), {})
            await voiceprints.add(store.sessions, "customer-1", _vp(2), {}, replace=True)
            assert await voiceprints.count(store.sessions) == 1
            await voiceprints.delete(store.sessions, "customer-1")
            with pytest.raises(VoiceprintNotFound):
                await voiceprints.get(store.sessions, "customer-1")
            with pytest.raises(VoiceprintNotFound):
                await voiceprints.delete(store.sessions, "customer-1")
        finally:
            await store.close()

    asyncio.run(run())


def test_external_id_limits(store_url: StoreUrls) -> None:
    async def run() -> None:
        store = await Store(store_url()).open()
        try:
            await voiceprints.add(store.sessions, "x" * 256, _vp(1), {})
            with pytest.raises(ValueError, match="256"):
                await voiceprints.add(store.sessions, "x" * 257, _vp(1), {})
            with pytest.raises(ValueError):
                await voiceprints.add(store.sessions, "", _vp(1), {})
        finally:
            await store.close()

    asyncio.run(run())


def test_failed_write_leaves_nothing_half_written(store_url: StoreUrls) -> None:
    """An embedding row that cannot be written rolls back the voiceprint row with it."""

    async def run() -> None:
        store = await Store(store_url()).open()
        try:
            bad = Voiceprint({"ecapa": _vp(1).embeddings["ecapa"]}, 20.0)
            object.__setattr__(bad.embeddings["ecapa"], "model_id", None)  # violates NOT NULL at insert
            with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError type varies
                await voiceprints.add(store.sessions, "broken", bad, {})
            async with store.engine.connect() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM voiceprints"))).scalar() == 0
                assert (await conn.execute(text("SELECT count(*) FROM voiceprint_embeddings"))).scalar() == 0
        finally:
            await store.close()

    asyncio.run(run())


def test_migrations_from_empty_match_the_tables(store_url: StoreUrls) -> None:
    async def run() -> None:
        store = await Store(store_url()).open()
        await store.open()  # idempotent
        try:
            async with store.engine.connect() as conn:
                names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
                columns = await conn.run_sync(
                    lambda c: {
                        t: {col["name"] for col in inspect(c).get_columns(t)} for t in Base.metadata.tables
                    }
                )
                if conn.dialect.name == "sqlite":
                    assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        finally:
            await store.close()
        assert set(Base.metadata.tables) <= names
        for table, cols in columns.items():
            assert cols == {c.name for c in Base.metadata.tables[table].columns}, table

    asyncio.run(run())


def test_autogenerate_finds_no_drift(store_url: StoreUrls) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    async def run() -> list[object]:
        store = await Store(store_url()).open()
        try:
            async with store.engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
                )
        finally:
            await store.close()

    assert asyncio.run(run()) == []


def test_search_by_prefix(store_url: StoreUrls) -> None:
    """Newest first, a limit with the full count, and `%`/`_` as plain characters (not LIKE wildcards)."""

    async def run() -> None:
        store = await Store(store_url()).open()
        try:
            for index, external_id in enumerate(["a-1", "a-2", "a%3", "a_4", "ab5", "b-1"]):
                await voiceprints.add(store.sessions, external_id, _vp(index), {"type": "recordings"})
                await asyncio.sleep(0.01)  # distinct creation times
            found, total = await voiceprints.search(store.sessions, "a", limit=3)
            assert total == 5 and [v.external_id for v in found] == ["ab5", "a_4", "a%3"]
            assert found[0].speech_s == 25.0 and found[0].source == {"type": "recordings"}
            assert found[0].created.tzinfo is not None
            assert [v.external_id for v in (await voiceprints.search(store.sessions, "a%"))[0]] == ["a%3"]
            assert [v.external_id for v in (await voiceprints.search(store.sessions, "a_"))[0]] == ["a_4"]
            everything, total = await voiceprints.search(store.sessions)
            assert total == 6 == len(everything)
            assert await voiceprints.search(store.sessions, "zzz") == ([], 0)
            assert await voiceprints.search(store.sessions, "a\x00") == ([], 0)  # nothing on either store
        finally:
            await store.close()

    asyncio.run(run())
