"""Backups and encrypted secrets: a backup carries them decrypted, so it restores on another server with
another key (which encrypts them with its own); the key id the store records is not carried; an encrypted
value in a backup (not one voxgate makes) restores only where it decrypts."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.postgres import StoreUrls
from voxgate.store import crypto, files, pbx, settings_kv, subscriptions
from voxgate.store.backup import BackupError, canonical, create_backup, encode_backup, parse_backup, restore
from voxgate.store.crypto import Keyring
from voxgate.store.db import Store

LIMIT = 1 << 24
PASSWORD = "sip-password-of-the-old-server"

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


def _raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in files.sqlite_files(path) if p.exists())


def _rewrap(document: dict[str, Any]) -> bytes:
    document = dict(document)
    document["payload_sha256"] = hashlib.sha256(canonical(document["payload"])).hexdigest()
    return gzip.compress(json.dumps(document).encode())


@pytest.mark.asyncio
async def test_a_backup_restores_on_a_server_with_another_key(store_url: StoreUrls, tmp_path: Path) -> None:
    first, second = Keyring.generate(), Keyring.generate()
    source = await Store(store_url("a"), first).open()
    target = await Store(store_url("b"), second).open()
    try:
        sub = await subscriptions.add(source.sessions, "streams", "line-1", "https://x/h")
        record = await pbx.create(source.sessions, "main", {"host": "pbx"}, PASSWORD)
        await settings_kv.set(source.sessions, settings_kv.SECRETS_KEY_ID, first.current_id)
        await settings_kv.set(target.sessions, settings_kv.SECRETS_KEY_ID, second.current_id)

        document = await create_backup(source.sessions)
        tables = document["payload"]["tables"]
        secret_at = tables["subscriptions"]["columns"].index("secret")
        password_at = tables["pbx"]["columns"].index("password")
        assert tables["subscriptions"]["rows"][0][secret_at] == sub.secret, "carried decrypted"
        assert tables["pbx"]["rows"][0][password_at] == PASSWORD
        assert settings_kv.SECRETS_KEY_ID not in {row[0] for row in tables["settings"]["rows"]}

        await restore(target.sessions, parse_backup(encode_backup(document), {}, LIMIT))
        assert await subscriptions.find(target.sessions) == [sub]
        assert (await pbx.get(target.sessions, record.uuid)).password == PASSWORD
        assert await settings_kv.get(target.sessions, settings_kv.SECRETS_KEY_ID) == second.current_id
        async with target.engine.connect() as connection:
            kept = [
                *(await connection.execute(text("SELECT secret FROM subscriptions"))).scalars(),
                *(await connection.execute(text("SELECT password FROM pbx"))).scalars(),
            ]
        assert len(kept) == 2 and all(v.startswith(f"{crypto.PREFIX}{second.current_id}:") for v in kept)
        if store_url.backend == "sqlite":  # no plain copy anywhere in the files either
            raw = _raw(tmp_path / "b.db")
            assert sub.secret.encode() not in raw and PASSWORD.encode() not in raw

        # a backup holding a value encrypted with the source's key: the target cannot read it
        sealed = json.loads(json.dumps(document))
        stored = first.seal(PASSWORD, crypto.context("pbx", "password", record.uuid))
        sealed["payload"]["tables"]["pbx"]["rows"][0][password_at] = stored
        with pytest.raises(BackupError, match="encrypted secret this server cannot read"):
            await restore(target.sessions, parse_backup(_rewrap(sealed), {}, LIMIT))
        assert (await pbx.get(target.sessions, record.uuid)).password == PASSWORD, "nothing changed"
        await restore(source.sessions, parse_backup(_rewrap(sealed), {}, LIMIT))  # the source can
        assert (await pbx.get(source.sessions, record.uuid)).password == PASSWORD

        too_long = json.loads(json.dumps(document))
        too_long["payload"]["tables"]["pbx"]["rows"][0][password_at] = "p" * (pbx.MAX_PASSWORD + 1)
        with pytest.raises(BackupError, match="password must be 1 to 256 characters"):
            parse_backup(_rewrap(too_long), {}, LIMIT)
    finally:
        await source.close()
        await target.close()
