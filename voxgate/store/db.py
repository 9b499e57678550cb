"""Opening the store: the async engine, SQLite pragmas, owner-only files, and migrations applied at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from voxgate.store import files
from voxgate.store.crypto import KEYRING_INFO, Keyring

MIGRATIONS = Path(__file__).parent / "migrations"

# The store's session factory (database sessions, not live streams): what every repository function takes.
DbSessions = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL with NORMAL sync never corrupts the database; a power cut may lose the last commits (not an
    # application crash). A sync per commit would cost every verify poll (each is an event) a disk flush.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def unstorable(session: AsyncSession, *values: str | None) -> bool:
    """Whether one of ``values`` is a string this store cannot hold: PostgreSQL's text has no NUL character
    (SQLite's has). A lookup by such a value finds nothing there, so the repositories answer "not found"
    without asking; sent to PostgreSQL it would be a driver error."""
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return False
    return any(value is not None and "\x00" in value for value in values)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another store or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    database = url.split("///", 1)[-1].split("?", 1)[0]
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def create_engine(url: str) -> AsyncEngine:
    database = sqlite_path(url)
    if database is not None:
        if not database.parent.exists():
            files.private_dir(database.parent)
        files.create_private(database)  # before SQLite creates it: its -wal and -shm files take its mode
    engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


# pg_advisory_xact_lock key serialising migrations (any fixed 64-bit number; b"voxgate" as an integer)
MIGRATION_LOCK = 0x766F7867617465


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent).

    PostgreSQL: nodes of a cluster (or workers) may start at once on a new database. The migrations run in
    one transaction that first takes an advisory lock, so one node migrates and the others wait for its
    commit, then find the schema current."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await connection.run_sync(upgrade)


class Store:
    """An open store: the engine and its session factory.

    ``keyring`` encrypts and decrypts the secrets stored in it (webhook signing secrets, SIP passwords);
    a store opened without one serves everything else. The runtime gives it after checking the key
    against the store (:meth:`use_keyring`)."""

    def __init__(self, url: str, keyring: Keyring | None = None) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        if keyring is not None:
            self.use_keyring(keyring)

    def use_keyring(self, keyring: Keyring) -> None:
        """Every session made from now on carries ``keyring`` (``voxgate.store.crypto.keyring_of``)."""
        self.sessions.configure(info={KEYRING_INFO: keyring})

    async def open(self) -> Store:
        database = sqlite_path(self.url)
        if database is not None:  # an older store's files, made before voxgate set their modes
            for path in files.sqlite_files(database):
                files.private_file(path)
        await migrate(self.engine)
        return self

    async def close(self) -> None:
        await self.engine.dispose()
