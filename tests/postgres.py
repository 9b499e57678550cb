"""A throwaway PostgreSQL server for the tests that run on both stores (see ``tests/conftest.py``).

PostgreSQL is the Debian package ``postgresql``; ``scripts/cluster-tools.sh postgresql`` installs it when it is
missing (CI runs as root; the tests call the script themselves, like the telephony and monitoring tests do).
The server lives in a fresh temporary folder: ``initdb`` there, ``pg_ctl start`` listening on 127.0.0.1 only
on a free port with password authentication, its unix socket (for ``psql``) in the same private folder. Durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): a crash of a test server loses nothing anyone wants.
Each test gets databases of its own (``CREATE DATABASE``, dropped after the test); the server is stopped and
its folder removed at the end of the session.

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (made by the Debian
package), or ``nobody``, through ``runuser``; the folder is handed to that user.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "cluster-tools.sh"
SUPERUSER = "voxgate"
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


class PostgresMissing(RuntimeError):
    """No PostgreSQL binaries here, even after the install script."""


def _has_server(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres", "psql"))


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def find_bin_dir() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``: PATH's, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian puts none of them on PATH)."""
    initdb = shutil.which("initdb")
    if initdb is not None and _has_server(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    found = [folder for folder in Path("/usr/lib/postgresql").glob("*/bin") if _has_server(folder)]
    return max(found, key=_version_key) if found else None


def ensure_installed() -> Path:
    """The binaries' folder, installing the Debian package with the project's script when it is missing."""
    folder = find_bin_dir()
    if folder is None:
        try:
            subprocess.run(["bash", str(INSTALL), "postgresql"], check=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresMissing(
                f"PostgreSQL is not installed and {INSTALL.relative_to(REPO)} could not install it ({exc}): "
                "run `scripts/cluster-tools.sh postgresql` as root (Debian package postgresql)"
            ) from exc
        folder = find_bin_dir()
    if folder is None:
        raise PostgresMissing(
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): run "
            "`scripts/cluster-tools.sh postgresql` as root (Debian package postgresql)"
        )
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """Who runs the server: None (this user) unless this is root, which PostgreSQL refuses to run as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresMissing("running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


@dataclass
class PostgresServer:
    """A running throwaway server; :meth:`stop` ends it and removes its folder."""

    bin_dir: Path
    folder: Path
    port: int
    password: str
    user: str | None  # the system user the server runs as (None: this one)
    watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, bin_dir: Path) -> PostgresServer:
        user = _server_user()
        folder = Path(tempfile.mkdtemp(prefix="voxgate-postgres-"))
        server = cls(bin_dir, folder, 0, secrets.token_urlsafe(24), user)
        try:
            if user is not None:
                shutil.chown(folder, user, user)
            password_file = folder / "password"
            password_file.write_text(server.password + "\n")
            password_file.chmod(0o600)
            if user is not None:
                shutil.chown(password_file, user, user)
            server._run(
                "initdb",
                "--pgdata", str(folder / "data"),
                "--username", SUPERUSER,
                "--pwfile", str(password_file),
                "--auth-host", "scram-sha-256",
                "--auth-local", "trust",  # the socket is in the private folder
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
                "--no-sync",
            )
            password_file.unlink()
            for _attempt in range(5):  # a port picked free may be taken before the server binds it
                server.port = _free_port()
                if server._pg_ctl_start():
                    server._watch()
                    return server
            raise RuntimeError(f"PostgreSQL did not start; its log:\n{server.log()}")
        except BaseException:
            server.stop()
            raise

    def _as_user(self, argv: list[str]) -> list[str]:
        return argv if self.user is None else ["runuser", "-u", self.user, "--", *argv]

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self._as_user([str(self.bin_dir / program), *args])
        done = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def _pg_ctl_start(self) -> bool:
        options = {**SERVER_OPTIONS, "port": str(self.port), "unix_socket_directories": str(self.folder)}
        argv = self._as_user(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "--pgdata", str(self.folder / "data"),
                "--log", str(self.folder / "server.log"),
                "--wait", "--timeout", "60",
                "--options", " ".join(f"-c {key}={value}" for key, value in options.items()),
            ]
        )
        done = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=120)
        return done.returncode == 0

    def _watch(self) -> None:
        """A shell that stops the server and removes its folder once this process is gone, however it ended
        (a test run killed by a timeout runs no teardown)."""
        stop = self._as_user(
            [str(self.bin_dir / "pg_ctl"), "stop", "--pgdata", str(self.folder / "data"), "--mode", "immediate"]
        )
        script = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; shift; "$@" >/dev/null 2>&1; rm -rf "$FOLDER"'
        self.watchdog = subprocess.Popen(
            ["sh", "-c", script, "watchdog", str(os.getpid()), *stop],
            env={**os.environ, "FOLDER": str(self.folder)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def url(self, database: str) -> str:
        """The SQLAlchemy async URL of one of this server's databases."""
        return f"postgresql+asyncpg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> str:
        """Run one statement in the ``postgres`` database (through the unix socket) and return its output."""
        return self._run(
            "psql",
            "--host", str(self.folder),
            "--port", str(self.port),
            "--username", SUPERUSER,
            "--dbname", "postgres",
            "--no-psqlrc", "--quiet", "--tuples-only", "--no-align",
            "--set", "ON_ERROR_STOP=1",
            "--command", statement,
        ).stdout

    def create_database(self, name: str) -> str:
        """A new empty database (from ``template0``); its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database made here, ending whatever connections are still open to it."""
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            argv = self._as_user(
                [str(self.bin_dir / "pg_ctl"), "stop", "--pgdata", str(self.folder / "data"), "--mode", "immediate"]
            )
            subprocess.run(argv, cwd=self.folder, capture_output=True, timeout=120, check=False)
            deadline = time.monotonic() + 30
            while (self.folder / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()


_numbers = itertools.count(1)


class StoreUrls:
    """The ``store_url`` fixture: URLs of fresh, empty stores for one test on the store under test.

    ``store_url()`` is the test's store, ``store_url("b")`` another one; the same name gives the same store
    (reopening it is a restart). SQLite: a file ``<name>.db`` in the test's folder. PostgreSQL: a database
    of its own on the session's server, dropped after the test."""

    def __init__(self, backend: str, folder: Path, server: PostgresServer | None) -> None:
        self.backend = backend
        self._folder = folder
        self._server = server
        self._databases: dict[str, str] = {}

    def __call__(self, name: str = "voxgate") -> str:
        if self._server is None:
            return f"sqlite+aiosqlite:///{self._folder / name}.db"
        if name not in self._databases:
            plain = re.sub(r"[^a-z0-9_]", "_", name.lower())[:40]
            database = f"test{next(_numbers)}_{plain}"
            self._server.create_database(database)
            self._databases[name] = database
        return self._server.url(self._databases[name])

    def drop(self) -> None:
        if self._server is not None:
            for database in self._databases.values():
                self._server.drop_database(database)
        self._databases.clear()
