"""Secrets at rest through the runtime's start: the key file made once and owner-only, plain secrets of an
older store encrypted at start (and gone from the file), rotation to a new key, and a clear refusal to
start with a missing, wrong or malformed key. The raw SQLite bytes are read, not the repository."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from pydantic import SecretStr, ValidationError

from voxgate.service import keys
from voxgate.settings import Settings, describe_errors
from voxgate.store import crypto, db, files, pbx, settings_kv, subscriptions
from voxgate.store.crypto import Keyring, SecretKeyError
from voxgate.store.db import Store, alembic_config
from voxgate.store.tables import PbxRow, SubscriptionRow

SUB_SECRET = "0123456789abcdef" * 4  # a 0.1 webhook secret as it was stored
SIP_PASSWORD = "sip-pa55word-in-the-clear"
KEY_A, KEY_B, KEY_C = crypto.new_key(), crypto.new_key(), crypto.new_key()


def _id(key: str) -> str:
    return crypto.key_id(crypto.parse_key(key, "k"))


def _settings(data: Path, **values: object) -> Settings:
    return Settings(data_dir=data, log_json=False, **values)  # type: ignore[arg-type]


def _raw(settings: Settings) -> bytes:
    """Every byte SQLite keeps on disk for the store."""
    database = Path(settings.resolved_database_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in files.sqlite_files(database) if p.exists())


def _plain_in(raw: bytes, *secrets: str) -> list[str]:
    """The secrets found in plain text in ``raw`` (by default the two of the older store)."""
    return [s for s in secrets or (SUB_SECRET, SIP_PASSWORD) if s.encode() in raw]


def _old_store(data: Path) -> None:
    """A store as voxgate wrote it before encryption (schema 0003): both secrets in plain text."""
    data.mkdir(parents=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{data / 'voxgate.db'}")
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        created = datetime(2026, 1, 2, tzinfo=UTC)
        connection.execute(
            sqlalchemy.insert(SubscriptionRow),
            [dict(uuid="s-1", type="streams", key="line-7", external_id=None, url="https://x/h",
                  secret=SUB_SECRET, created=created)],
        )  # fmt: skip
        connection.execute(
            sqlalchemy.insert(PbxRow),
            [dict(uuid="p-1", name="main", config={"host": "pbx"}, password=SIP_PASSWORD, started=False,
                  created=created)],
        )  # fmt: skip
    engine.dispose()


async def _open(settings: Settings) -> Store:
    """The store as the runtime opens it: the key checked, the start-up step run."""
    store = await Store(settings.resolved_database_url).open()
    try:
        store.use_keyring(await keys.unlock(store.sessions, settings))
    except BaseException:
        await store.close()
        raise
    return store


async def _secrets(settings: Settings) -> tuple[str, str]:
    store = await _open(settings)
    try:
        (sub,) = await subscriptions.find(store.sessions)
        (record,) = await pbx.list_all(store.sessions)
        return sub.secret, record.password
    finally:
        await store.close()


async def _key_ids(settings: Settings) -> crypto.SecretsSurvey:
    store = await Store(settings.resolved_database_url).open()
    try:
        return await crypto.survey(store.sessions)
    finally:
        await store.close()


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files 0644, directories 0755 unless voxgate says otherwise
    yield
    os.umask(old)


@pytest.fixture
def no_default_secure_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections as most SQLite builds make them (some distributions turn secure_delete on by default):
    freed space keeps its old bytes unless voxgate asks otherwise."""
    pragmas = db._sqlite_pragmas

    def without(dbapi_connection: Any, record: Any) -> None:
        pragmas(dbapi_connection, record)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA secure_delete=OFF")
        cursor.close()

    monkeypatch.setattr(db, "_sqlite_pragmas", without)


@pytest.mark.asyncio
@pytest.mark.usefixtures("umask", "no_default_secure_delete")
async def test_an_older_plain_store_is_encrypted_at_start(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from voxgate.service.runtime import Runtime

    data = tmp_path / "data"
    _old_store(data)
    (data / "voxgate.db").chmod(0o644)
    data.chmod(0o755)
    settings = _settings(data, model_dir=model_dir)
    assert _plain_in(_raw(settings)) == [SUB_SECRET, SIP_PASSWORD]

    caplog.set_level(logging.INFO)
    runtime = Runtime(settings)
    await runtime.start(live=False)
    try:
        (sub,) = await subscriptions.find(runtime.store.sessions)
        (record,) = await pbx.list_all(runtime.store.sessions)
        assert (sub.secret, record.password) == (SUB_SECRET, SIP_PASSWORD)
    finally:
        await runtime.stop()

    raw = _raw(settings)
    assert _plain_in(raw) == [], "no plain copy left behind"
    assert raw.count(crypto.PREFIX.encode()) >= 2
    key_file = data / "secrets.key"
    survey = await _key_ids(settings)
    assert survey.plain == 0 and survey.sealed == {_id(key_file.read_text()): 2}
    assert survey.recorded == _id(key_file.read_text())
    messages = [r.getMessage() for r in caplog.records]
    assert any("encrypted 2 secrets an older voxgate stored in plain text" in m for m in messages)
    assert any("generated the secrets key" in m for m in messages)
    assert any("data directory" in m and "tightened" in m for m in messages)

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes == {name: 0o600 for name in modes} and "secrets.key" in modes, modes
    assert await _secrets(settings) == (SUB_SECRET, SIP_PASSWORD), "the next start reads them back"


@pytest.mark.asyncio
async def test_a_wrong_key_refuses_to_start_and_changes_nothing(tmp_path: Path, model_dir: Path) -> None:
    from voxgate.service.runtime import Runtime

    data = tmp_path / "data"
    _old_store(data)
    assert await _secrets(_settings(data, secret_key=SecretStr(KEY_A))) == (SUB_SECRET, SIP_PASSWORD)
    before = _raw(_settings(data))

    runtime = Runtime(_settings(data, secret_key=SecretStr(KEY_B), model_dir=model_dir))
    with pytest.raises(SecretKeyError) as refused:
        await runtime.start(live=False)
    message = str(refused.value)
    assert f"encrypted with key {_id(KEY_A)}" in message and f"configured key is {_id(KEY_B)}" in message
    assert "VOXGATE_SECRET_KEY" in message and KEY_A not in message and KEY_B not in message
    assert runtime._store is None, "what was opened is closed again"
    survey = await _key_ids(_settings(data))
    assert survey.sealed == {_id(KEY_A): 2} and survey.recorded == _id(KEY_A)
    assert not (data / "secrets.key").exists(), "no key file is made when the key comes from the environment"
    assert _raw(_settings(data)).count(crypto.PREFIX.encode()) == before.count(crypto.PREFIX.encode())


@pytest.mark.asyncio
async def test_a_store_that_recorded_a_key_refuses_another_even_without_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await _open(_settings(data, secret_key=SecretStr(KEY_A)))).close()
    with pytest.raises(SecretKeyError, match=f"encrypted with key {_id(KEY_A)}"):
        await _open(_settings(data, secret_key=SecretStr(KEY_B)))


@pytest.mark.asyncio
async def test_a_lost_key_file_is_not_replaced_by_a_new_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _old_store(data)
    settings = _settings(data)
    assert await _secrets(settings) == (SUB_SECRET, SIP_PASSWORD)
    key_file = data / "secrets.key"
    kept = key_file.read_text()
    assert await _secrets(settings) == (SUB_SECRET, SIP_PASSWORD), "the same key at the next start"
    assert key_file.read_text() == kept

    key_file.unlink()
    with pytest.raises(SecretKeyError) as refused:
        await _open(settings)
    assert f"encrypted with key {_id(kept)}" in str(refused.value)
    assert "does not exist" in str(refused.value) and str(key_file) in str(refused.value)
    assert not key_file.exists()

    key_file.write_text("not a key\n")
    with pytest.raises(SecretKeyError, match=r"the secrets key file .* must be 32 random bytes in base64"):
        await _open(settings)
    key_file.write_text(KEY_B + "\n")
    with pytest.raises(SecretKeyError, match=f"configured key {_id(KEY_B)} comes from the key file"):
        await _open(settings)
    key_file.write_text(kept)
    assert await _secrets(settings) == (SUB_SECRET, SIP_PASSWORD)


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_default_secure_delete")
async def test_rotation_re_encrypts_with_the_new_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    _old_store(data)
    assert await _secrets(_settings(data, secret_key=SecretStr(KEY_A))) == (SUB_SECRET, SIP_PASSWORD)

    rotating = _settings(data, secret_key=SecretStr(KEY_B), secret_key_previous=SecretStr(KEY_A))
    assert await _secrets(rotating) == (SUB_SECRET, SIP_PASSWORD)
    assert any("re-encrypted 2 secrets from the previous key" in r.getMessage() for r in caplog.records)
    survey = await _key_ids(_settings(data))
    assert survey.sealed == {_id(KEY_B): 2} and survey.recorded == _id(KEY_B)
    raw = _raw(_settings(data))
    assert f"{crypto.PREFIX}{_id(KEY_A)}".encode() not in raw, "the old key's values are gone from the file"

    assert await _secrets(_settings(data, secret_key=SecretStr(KEY_B))) == (SUB_SECRET, SIP_PASSWORD)
    with pytest.raises(SecretKeyError, match=f"encrypted with key {_id(KEY_B)}"):
        await _open(_settings(data, secret_key=SecretStr(KEY_A)))

    # rotating a key file: the old key given as previous, the file removed: a new file is made
    (data / "secrets.key").write_text(KEY_B)
    (data / "secrets.key").chmod(0o600)
    assert await _secrets(_settings(data)) == (SUB_SECRET, SIP_PASSWORD)
    (data / "secrets.key").unlink()
    assert await _secrets(_settings(data, secret_key_previous=SecretStr(KEY_B))) == (SUB_SECRET, SIP_PASSWORD)
    new = (data / "secrets.key").read_text().strip()
    assert new != KEY_B and (await _key_ids(_settings(data))).sealed == {_id(new): 2}

    with pytest.raises(SecretKeyError, match="VOXGATE_SECRET_KEY_PREVIOUS is the current key"):
        await _open(_settings(data, secret_key_previous=SecretStr(new)))


@pytest.mark.asyncio
async def test_new_secrets_are_never_written_in_plain_text(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    store = await _open(settings)
    try:
        sub = await subscriptions.add(store.sessions, "streams", "line-1", "https://x/h")
        record = await pbx.create(store.sessions, "main", {"host": "pbx"}, SIP_PASSWORD)
        assert await subscriptions.get(store.sessions, sub.uuid) == sub
        assert (await pbx.get(store.sessions, record.uuid)).password == SIP_PASSWORD
        raw = _raw(settings)
        assert _plain_in(raw, sub.secret, SIP_PASSWORD) == []
        assert (
            await settings_kv.get(store.sessions, settings_kv.SECRETS_KEY_ID)
            == Keyring(crypto.parse_key((settings.data_dir / "secrets.key").read_text(), "k")).current_id
        )
    finally:
        await store.close()


def test_key_settings_are_checked_and_never_echoed() -> None:
    for values, named in (
        ({"secret_key": "too-short"}, "VOXGATE_SECRET_KEY"),
        ({"secret_key_previous": "x" * 44}, "VOXGATE_SECRET_KEY_PREVIOUS"),
        ({"secret_key": KEY_A, "secret_key_file": "/k"}, "not both"),
        ({"secret_key": KEY_A, "secret_key_previous": KEY_A}, "must differ"),
    ):
        with pytest.raises(ValidationError) as refused:
            Settings(**values)  # type: ignore[arg-type]
        described = describe_errors(refused.value)
        assert named in described, described
        assert "too-short" not in described and "x" * 44 not in described and KEY_A not in described
    assert Settings(secret_key_file=Path("/k")).resolved_secret_key_file == Path("/k")
    assert Settings(data_dir=Path("/d")).resolved_secret_key_file == Path("/d/secrets.key")


@pytest.mark.asyncio
async def test_serve_refuses_to_start_with_the_wrong_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _old_store(data)
    assert await _secrets(_settings(data, secret_key=SecretStr(KEY_A))) == (SUB_SECRET, SIP_PASSWORD)
    env = {**os.environ, "VOXGATE_DATA_DIR": str(data), "VOXGATE_SECRET_KEY": KEY_B}
    done = subprocess.run(
        [sys.executable, "-m", "voxgate", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "voxgate: refusing to start:" in done.stderr and f"encrypted with key {_id(KEY_A)}" in done.stderr
    assert "Traceback" not in done.stderr and KEY_B not in done.stderr
