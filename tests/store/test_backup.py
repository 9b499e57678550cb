"""The backup repository without HTTP: consistent reads, every table accounted for, a backup restored
into another store, and refusals of documents this voxgate cannot restore."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Integer, func, select

from tests.postgres import PostgresServer, StoreUrls
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.store import profiles, settings_kv, voiceprints
from voxgate.store.backup import (
    EXCLUDED,
    TABLES,
    VOICEPRINT_TABLES,
    BackupError,
    canonical,
    create_backup,
    encode_backup,
    parse_backup,
    restore,
    schema_revisions,
)
from voxgate.store.crypto import Keyring
from voxgate.store.db import Store
from voxgate.store.snapshots import DocumentTooLarge, ModelSpec, consistent_read, list_entries
from voxgate.store.tables import Base, SettingRow, SubscriptionRow

ENGINE = {m: ModelSpec(m, "v1", 8) for m in ("ecapa", "campplus")}
LIMIT = 1 << 24
KEYRING = Keyring.generate()  # the secrets key of every store these tests open

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


def _vp(seed: int) -> Voiceprint:
    rng = np.random.default_rng(seed)
    return Voiceprint(
        {m: Embedding(m, "v1", l2_normalise(rng.standard_normal(8).astype(np.float32))) for m in ENGINE}, 21.5
    )


async def _store(url: str) -> Store:
    return await Store(url, KEYRING).open()


def _rewrap(document: dict[str, Any]) -> bytes:
    document = dict(document)
    document["payload_sha256"] = hashlib.sha256(canonical(document["payload"])).hexdigest()
    return gzip.compress(json.dumps(document).encode())


def test_every_table_is_backed_up_or_excluded_with_a_reason() -> None:
    tables = set(Base.metadata.tables)
    assert tables == set(TABLES) | set(VOICEPRINT_TABLES) | set(EXCLUDED), (
        "a new table must be added to voxgate.store.backup.TABLES or EXCLUDED"
    )
    assert all(EXCLUDED.values())
    for name in TABLES:
        # rows keep their primary keys; an integer autoincrement key would need its PostgreSQL sequence
        # moved on restore, which restore() does not do
        for column in Base.metadata.tables[name].primary_key.columns:
            assert not isinstance(column.type, Integer), f"{name}.{column.name}"


def test_consistent_read_sees_one_snapshot(store_url: StoreUrls) -> None:
    async def run() -> None:
        store = await _store(store_url("a"))
        try:
            await settings_kv.set(store.sessions, "one", 1)
            async with consistent_read(store.sessions) as session:
                first = await session.scalar(select(func.count()).select_from(SettingRow))
                await settings_kv.set(store.sessions, "two", 2)  # a writer is not blocked ...
                second = await session.scalar(select(func.count()).select_from(SettingRow))
            assert first == second == 1  # ... and the reader does not see it
            assert len(await settings_kv.items(store.sessions)) == 2
        finally:
            await store.close()

    asyncio.run(run())


def test_backup_restores_into_another_store(store_url: StoreUrls) -> None:
    async def run() -> None:
        source, target = await _store(store_url("a")), await _store(store_url("b"))
        try:
            await voiceprints.add(source.sessions, "a", _vp(1), {"kind": "recordings"})
            await voiceprints.add(source.sessions, "b", _vp(2), {"kind": "stream", "stream_uuid": "u"})
            await profiles.ensure_shipped(source.sessions)
            await settings_kv.set(source.sessions, "custom", {"x": [1, 2.5, "ž"]})
            await settings_kv.set(source.sessions, settings_kv.MAINTENANCE, True)
            async with source.sessions() as session, session.begin():
                session.add(
                    SubscriptionRow(
                        uuid="s-1",
                        type="verify",
                        key="k",
                        external_id="a",
                        url="https://x/hook",
                        secret="s3cret",
                        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                    )
                )
            await voiceprints.add(target.sessions, "z", _vp(9), {})  # replaced by the restore

            data = encode_backup(await create_backup(source.sessions))
            parsed = parse_backup(data, ENGINE, LIMIT)
            counts = await restore(target.sessions, parsed)
            assert counts["voiceprints"] == 2 and counts["subscriptions"] == 1

            assert await list_entries(target.sessions) == await list_entries(source.sessions)
            mine = (await create_backup(source.sessions))["payload"]
            theirs = (await create_backup(target.sessions))["payload"]
            assert canonical(mine) == canonical(theirs)
            assert await settings_kv.get(target.sessions, "custom") == {"x": [1, 2.5, "ž"]}
            assert await settings_kv.get(target.sessions, settings_kv.MAINTENANCE) is None, "not restored"
        finally:
            await source.close()
            await target.close()

    asyncio.run(run())


@pytest.mark.postgresql
def test_a_backup_moves_a_store_between_sqlite_and_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The document is dialect-neutral: SQLite -> PostgreSQL -> SQLite gives back the same payload (the way
    from the embedded store to a cluster, and back)."""

    async def run() -> None:
        sqlite = await _store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
        postgresql = await _store(postgres_server.create_database("moved"))
        back = await _store(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
        try:
            await voiceprints.add(sqlite.sessions, "a", _vp(1), {"kind": "recordings", "files": ["ž.wav"]})
            await voiceprints.add(sqlite.sessions, "b" * 256, _vp(2), {})
            await profiles.ensure_shipped(sqlite.sessions)
            await settings_kv.set(sqlite.sessions, "custom", {"x": [1, 2.5, "ž", None, True]})
            original = await create_backup(sqlite.sessions)
            await restore(postgresql.sessions, parse_backup(encode_backup(original), ENGINE, LIMIT))
            moved = await create_backup(postgresql.sessions)
            assert moved["source_dialect"] == "postgresql" and moved["counts"] == original["counts"]
            await restore(back.sessions, parse_backup(encode_backup(moved), ENGINE, LIMIT))
            returned = await create_backup(back.sessions)
            assert canonical(original["payload"]) == canonical(moved["payload"]) == canonical(returned["payload"])
            assert await list_entries(back.sessions) == await list_entries(sqlite.sessions)
        finally:
            for store in (sqlite, postgresql, back):
                await store.close()
            postgres_server.drop_database("moved")

    asyncio.run(run())


def test_documents_this_voxgate_cannot_restore(store_url: StoreUrls) -> None:
    async def run() -> dict[str, Any]:
        store = await _store(store_url("a"))
        try:
            await voiceprints.add(store.sessions, "a", _vp(1), {})
            await profiles.ensure_shipped(store.sessions)
            return await create_backup(store.sessions)
        finally:
            await store.close()

    document = asyncio.run(run())
    ok = json.loads(json.dumps(document))
    parse_backup(_rewrap(ok), ENGINE, LIMIT)

    newer_table = json.loads(json.dumps(document))
    newer_table["payload"]["tables"]["pbx_instances"] = {"columns": [], "rows": []}
    with pytest.raises(BackupError, match="pbx_instances"):
        parse_backup(_rewrap(newer_table), ENGINE, LIMIT)

    newer_column = json.loads(json.dumps(document))
    newer_column["payload"]["tables"]["settings"]["columns"].append("scope")
    with pytest.raises(BackupError, match="scope"):
        parse_backup(_rewrap(newer_column), ENGINE, LIMIT)

    # an older backup without a column that has a default, or without a table, still restores
    older = json.loads(json.dumps(document))
    table = older["payload"]["tables"]["profiles"]
    at = table["columns"].index("shipped")
    table["columns"].pop(at)
    for row in table["rows"]:
        row.pop(at)
    del older["payload"]["tables"]["subscriptions"]
    parsed = parse_backup(_rewrap(older), ENGINE, LIMIT)
    assert all(row["shipped"] is False for row in parsed.tables["profiles"])
    assert parsed.tables["subscriptions"] == []

    duplicate = json.loads(json.dumps(document))
    rows = duplicate["payload"]["tables"]["profiles"]["rows"]
    rows.append(list(rows[0]))
    with pytest.raises(BackupError, match="same"):
        parse_backup(_rewrap(duplicate), ENGINE, LIMIT)

    tampered = json.loads(json.dumps(document))
    columns = tampered["payload"]["tables"]["profiles"]["columns"]
    first = tampered["payload"]["tables"]["profiles"]["rows"][0]
    first[columns.index("document")]["thresholds"]["accept_llr"] += 1.0
    with pytest.raises(BackupError, match="hash"):
        parse_backup(_rewrap(tampered), ENGINE, LIMIT)

    dangling = json.loads(json.dumps(document))
    dangling["payload"]["tables"]["settings"]["rows"].append([settings_kv.ACTIVE_PROFILE, "no-such-uuid"])
    with pytest.raises(BackupError, match="active calibration profile"):
        parse_backup(_rewrap(dangling), ENGINE, LIMIT)

    bomb = gzip.compress(b" " * (LIMIT + 1))
    with pytest.raises(DocumentTooLarge, match="inflates"):
        parse_backup(bomb, ENGINE, LIMIT)


def test_a_backup_names_where_it_comes_from_and_is_refused_when_that_cannot_restore(store_url: StoreUrls) -> None:
    """Regression: revision 0099, a "mysql" source or a garbage version restored with 200."""

    async def run() -> dict[str, Any]:
        store = await _store(store_url("a"))
        try:
            await voiceprints.add(store.sessions, "a", _vp(1), {})
            return await create_backup(store.sessions)
        finally:
            await store.close()

    document = asyncio.run(run())
    known = schema_revisions()
    assert document["schema_revision"] == known[-1] and document["source_dialect"] == store_url.backend

    def changed(**header: Any) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(document))
        for key, value in header.items():
            if value is None:
                del copy[key]
            else:
                copy[key] = value
        return copy

    for header, words in (
        ({"schema_revision": "0099"}, "newer voxgate"),
        ({"schema_revision": None}, "no schema_revision"),
        ({"source_dialect": "mysql"}, "'mysql' store"),
        ({"source_dialect": None}, "None"),
        ({"voxgate_version": "banana"}, "not a version number"),
        ({"voxgate_version": "7.0.0"}, "another major version"),
    ):
        with pytest.raises(BackupError, match=words):
            parse_backup(_rewrap(changed(**header)), ENGINE, LIMIT)
    # the format is dialect-neutral: a PostgreSQL backup restores here, and an older known revision migrates
    assert parse_backup(_rewrap(changed(source_dialect="postgresql")), ENGINE, LIMIT).voiceprints
    assert parse_backup(_rewrap(changed(schema_revision=known[0])), ENGINE, LIMIT).schema_revision == known[0]


def test_a_decompression_bomb_is_refused_before_it_costs_memory() -> None:
    """Regression: a 1 MB gzip snapshot cost 31 s and 6.9 GB before its 400 (it inflated to the 1 GiB limit
    and was then parsed). Now a stream that inflates far more than a snapshot can is stopped early."""
    import time
    import tracemalloc
    import zlib

    from voxgate.store.snapshots import inflate

    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    bomb = b"".join(deflater.compress(block) for _ in range(900)) + deflater.flush()  # 900 MiB of spaces
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match="decompression bomb"):
        inflate(bomb, 1 << 30, "snapshot")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"
    assert time.monotonic() - started < 5
    honest = gzip.compress(
        json.dumps({"format": "x", "data": base64.b64encode(os.urandom(3 << 20)).decode()}).encode()
    )
    assert len(inflate(honest, 1 << 30, "snapshot")) > len(honest)
