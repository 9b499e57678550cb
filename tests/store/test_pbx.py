"""The PBX instance repository, and PBX instances in a backup round trip."""

from __future__ import annotations

import pytest

from tests.postgres import StoreUrls
from voxgate.store import pbx
from voxgate.store.backup import create_backup, encode_backup, parse_backup, restore
from voxgate.store.crypto import Keyring
from voxgate.store.db import Store
from voxgate.store.pbx import PbxNotFound

CONFIG = {"host": "pbx.example.com", "port": 5060, "username": "voxgate", "codecs": ["PCMU"]}
KEYRING = Keyring.generate()  # the secrets key of every store these tests open

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


@pytest.mark.asyncio
async def test_create_list_start_delete(store_url: StoreUrls) -> None:
    store = await Store(store_url("a"), KEYRING).open()
    try:
        first = await pbx.create(store.sessions, "main", CONFIG, "secret")
        second = await pbx.create(store.sessions, "backup", {**CONFIG, "host": "pbx2"}, "other")
        assert not first.started and first.created.tzinfo is not None
        assert [r.uuid for r in await pbx.list_all(store.sessions)] == [first.uuid, second.uuid]
        await pbx.set_started(store.sessions, first.uuid, True)
        got = await pbx.get(store.sessions, first.uuid)
        assert got.started and got.config == CONFIG and got.password == "secret"
        await pbx.delete(store.sessions, first.uuid)
        for call in (pbx.get, pbx.delete):
            with pytest.raises(PbxNotFound):
                await call(store.sessions, first.uuid)
        with pytest.raises(PbxNotFound):
            await pbx.set_started(store.sessions, first.uuid, False)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_instances_travel_in_backups(store_url: StoreUrls) -> None:
    source = await Store(store_url("a"), KEYRING).open()
    target = await Store(store_url("b"), KEYRING).open()
    try:
        record = await pbx.create(source.sessions, "main", CONFIG, "secret")
        await pbx.set_started(source.sessions, record.uuid, True)
        data = encode_backup(await create_backup(source.sessions))
        await pbx.create(target.sessions, "replaced", CONFIG, "x")
        await restore(target.sessions, parse_backup(data, {}, 1 << 24))
        (restored,) = await pbx.list_all(target.sessions)
        assert restored == record.__class__(**{**record.__dict__, "started": True})
    finally:
        await source.close()
        await target.close()
