"""A throwaway Redis server for the cluster tests (in the spirit of ``tests/postgres.py``).

Redis is the Debian package ``redis-server``; ``scripts/cluster-tools.sh redis-server`` installs it when it is
missing. The server runs in the foreground of a child process, in a fresh temporary folder, on 127.0.0.1 and a
free port, without persistence (no RDB snapshots, no AOF): live state only, as in production. A watchdog shell
stops it once the test process is gone, however that ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "cluster-tools.sh"


class RedisMissing(RuntimeError):
    """No redis-server here, even after the install script."""


def ensure_installed() -> str:
    """The path of ``redis-server``, installing the Debian package with the project's script if missing."""
    found = shutil.which("redis-server")
    if found is None:
        try:
            subprocess.run(["bash", str(INSTALL), "redis-server"], check=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RedisMissing(
                f"redis-server is not installed and {INSTALL.relative_to(REPO)} could not install it ({exc}): "
                "run `scripts/cluster-tools.sh redis-server` as root (Debian package redis-server)"
            ) from exc
        found = shutil.which("redis-server")
    if found is None:
        raise RedisMissing("redis-server is not installed: run `scripts/cluster-tools.sh redis-server` as root")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A running throwaway server; :meth:`stop` ends it and removes its folder."""

    process: subprocess.Popen[bytes]
    folder: Path
    port: int
    watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, binary: str) -> RedisServer:
        folder = Path(tempfile.mkdtemp(prefix="voxgate-redis-"))
        for _attempt in range(5):  # a port picked free may be taken before the server binds it
            port = free_port()
            log = (folder / "server.log").open("ab")
            process = subprocess.Popen(
                [
                    binary,
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(folder),
                    "--daemonize", "no",
                    "--protected-mode", "yes",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            deadline = time.monotonic() + 15
            while process.poll() is None and time.monotonic() < deadline and not _answers(port):
                time.sleep(0.05)
            if process.poll() is None and _answers(port):
                server = cls(process, folder, port)
                server._watch()
                return server
            process.kill()
            process.wait()
        text = (folder / "server.log").read_text(errors="replace")
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start; its log:\n{text}")

    def _watch(self) -> None:
        script = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null; rm -rf "$FOLDER"'
        self.watchdog = subprocess.Popen(
            ["sh", "-c", script, "watchdog", str(os.getpid()), str(self.process.pid)],
            env={**os.environ, "FOLDER": str(self.folder)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            if not conn.recv(16).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
