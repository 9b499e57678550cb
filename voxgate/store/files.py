"""Owner-only files: the data directory is 0700, what voxgate writes in it 0600 (the SQLite database and
its -wal/-shm files, the secrets key, the reset secret). Modes are set explicitly, whatever the umask; an
existing directory or file that others could read is tightened, with a warning in the log."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "create_private",
    "private_dir",
    "private_file",
    "sqlite_files",
    "write_private",
]


def private_dir(path: Path) -> None:
    """Create ``path`` owner-only (parents as the umask says), or tighten an existing one to 0700."""
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode goes through the umask
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & ~0o077 | DIR_MODE)
        log.warning(
            "the data directory %s was readable by others (mode %04o): tightened to %04o",
            path,
            mode,
            mode & ~0o077 | DIR_MODE,
        )


def private_file(path: Path) -> None:
    """Tighten an existing file that others could read or write to 0600 (a missing one is left alone)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, FILE_MODE)
        log.warning("%s was readable by others (mode %04o): tightened to 0600", path, mode)


def sqlite_files(database: Path) -> list[Path]:
    """The database file and the files SQLite keeps beside it."""
    return [database.with_name(database.name + suffix) for suffix in SQLITE_SUFFIXES]


def create_private(path: Path) -> None:
    """An empty file made 0600 before anyone writes to it (SQLite gives its -wal/-shm files the mode of
    the database file); an existing file is left as it is."""
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(descriptor)
        os.chmod(path, FILE_MODE)


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (a temporary file renamed over it).

    ``exclusive``: fail with FileExistsError rather than replace an existing file (the key file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this writer's own: the workers of one box start together and write the same files
    partial = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(partial, FILE_MODE)  # an existing file keeps its old mode through O_CREAT
        if exclusive:
            os.link(partial, path)  # FileExistsError if another process made it meanwhile
            os.unlink(partial)
        else:
            os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
