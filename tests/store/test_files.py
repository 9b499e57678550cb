"""The store's files are owner-only: the directory 0700, the database and its -wal/-shm files 0600 whatever
the umask, an older store's wider modes tightened with a warning."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from voxgate.store import files
from voxgate.store.db import Store


@pytest.mark.asyncio
async def test_the_store_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        folder = tmp_path / "new" / "data"
        store = await Store(f"sqlite+aiosqlite:///{folder / 'voxgate.db'}").open()
        await store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    made = [p for p in files.sqlite_files(folder / "voxgate.db") if p.exists()]
    assert folder / "voxgate.db" in made
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {p.name: 0o600 for p in made}


@pytest.mark.asyncio
async def test_an_older_stores_wider_modes_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "voxgate.db"
    store = await Store(f"sqlite+aiosqlite:///{database}").open()
    await store.close()
    database.chmod(0o644)
    (tmp_path / "voxgate.db-wal").touch(0o666)
    (tmp_path / "voxgate.db-wal").chmod(0o666)
    tmp_path.chmod(0o755)
    files.private_dir(tmp_path)
    store = await Store(f"sqlite+aiosqlite:///{database}").open()
    await store.close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    for path in files.sqlite_files(database):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("data directory" in m and "tightened to 0700" in m for m in warned), warned
    assert any("voxgate.db was readable by others (mode 0644)" in m for m in warned), warned
    assert any("voxgate.db-wal was readable by others (mode 0666)" in m for m in warned), warned


def test_private_files_are_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "k"
    old = os.umask(0)
    try:
        files.write_private(path, "one\n")
        files.write_private(path, "two\n")
        with pytest.raises(FileExistsError):
            files.write_private(path, "three\n", exclusive=True)
    finally:
        os.umask(old)
    assert path.read_text() == "two\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"], "no temporary file left behind"
