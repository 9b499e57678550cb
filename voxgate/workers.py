"""``voxgate serve --workers N``: N processes behind one port, each with its own inference engine.

The supervisor (this module, in the process the operator started) binds the listening sockets once and
starts N ``voxgate serve`` worker processes that inherit them (the kernel hands each new connection to one
worker waiting in ``accept``). Each worker is a node of the cluster in its own right: its own node id, its own
inference engine, its own internal address that the other nodes forward a stream's requests to (a free
port, on ``VOXGATE_NODE_URL``'s host if set), and the shared live state in Redis; that is why
more than one worker needs ``VOXGATE_REDIS_URL``. The metrics port is bound here too and shared
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``; a temporary folder if it is unset).

New connections go to the worker with the fewest live streams (:mod:`voxgate.worker_balance`: the
kernel alone split them 27 / 13 over two idle workers).

Worker 0 starts first and alone until it serves (a new store is set up once); the others then start
together. A worker that dies is started again (at most once per :data:`RESTART_S` per slot); its live streams end
like those of any dead node. SIGTERM or SIGINT stops every worker, then the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from voxgate.settings import Settings
from voxgate.worker_balance import LoadBoard

log = logging.getLogger(__name__)

RESTART_S = 5.0  # a worker slot is restarted at most this often
STOP_S = 30.0  # a worker gets this long to stop after SIGTERM


class WorkersRefused(ValueError):
    """More than one worker without the shared state they need."""


def worker_count(requested: int | None, settings: Settings) -> int:
    """``--workers`` or VOXGATE_WORKERS; by default one per core with Redis, 1 without."""
    count = requested if requested is not None else settings.workers
    if count is None:
        count = (os.cpu_count() or 1) if settings.redis_url else 1
    if count < 1:
        raise WorkersRefused(f"--workers must be at least 1 (got {count})")
    if count > 1 and not settings.redis_url:
        raise WorkersRefused(
            f"{count} workers need VOXGATE_REDIS_URL: each worker is a node with its own streams, and the "
            "workers share the stream registry, maintenance mode and the login throttle through Redis "
            "(docs/scale-out.md). Without Redis, run one worker."
        )
    return count


def worker_env(index: int, environ: dict[str, str]) -> dict[str, str]:
    """A worker's environment: a configured node id gets ``-<index>`` (the default host-pid is unique
    already). Its internal address is a free port of its own, on VOXGATE_NODE_URL's host if that is set
    (one port per box cannot address N workers)."""
    env = dict(environ)
    if "VOXGATE_NODE_ID" in environ:
        env["VOXGATE_NODE_ID"] = f"{environ['VOXGATE_NODE_ID']}-{index}"
    return env


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket the workers inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Supervisor:
    """Starts, watches and stops the workers (see the module's docstring)."""

    settings: Settings
    count: int
    serve_args: list[str]  # `serve` options every worker gets (host, TLS)
    api: list[socket.socket]
    metrics: socket.socket | None = None
    board: LoadBoard | None = None  # each worker's live streams (voxgate.worker_balance)
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    stopping: bool = False

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "voxgate", "serve", *self.serve_args]
        argv += ["--listen-fds", ",".join(str(s.fileno()) for s in self.api), "--worker-index", str(index)]
        if self.metrics is not None:
            argv += ["--metrics-fd", str(self.metrics.fileno())]
        if self.board is not None:
            argv += ["--board-fd", f"{self.board.fd},{self.board.count}"]
        return argv

    def _spawn(
        self, index: int, environ: dict[str, str], ready_fd: int | None = None
    ) -> subprocess.Popen[bytes]:
        fds = [s.fileno() for s in self.api] + ([self.metrics.fileno()] if self.metrics is not None else [])
        if self.board is not None:
            fds.append(self.board.fd)
        argv = self._argv(index)
        if ready_fd is not None:
            fds.append(ready_fd)
            argv += ["--ready-fd", str(ready_fd)]
        return subprocess.Popen(argv, env=worker_env(index, environ), pass_fds=fds)

    def _first(self, environ: dict[str, str]) -> subprocess.Popen[bytes]:
        """Worker 0, alone until it serves: a new store is migrated, and its account, secrets key and
        shipped profiles made, once; the others then start together and find them."""
        read_end, write_end = os.pipe()
        try:
            first = self._spawn(0, environ, ready_fd=write_end)
            os.close(write_end)
            write_end = -1
            while not self.stopping:  # a byte: serving; end of file: it exited (restarted below)
                readable, _, _ = select.select([read_end], [], [], 0.5)
                if readable:
                    os.read(read_end, 1)
                    break
            return first
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)

    def run(self, environ: dict[str, str]) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.workers = [self._first(environ)]
        self.workers += [self._spawn(i, environ) for i in range(1, self.count)]
        self.started = [time.monotonic()] * self.count
        print(
            f"voxgate: {self.count} workers (pids {', '.join(str(w.pid) for w in self.workers if w)})",
            file=sys.stderr,
            flush=True,
        )
        while not self.stopping:
            time.sleep(0.5)
            for index, worker in enumerate(self.workers):
                if self.stopping or worker is None or worker.poll() is None:
                    continue
                if time.monotonic() - self.started[index] < RESTART_S:
                    continue  # it died young: wait before trying again
                log.error(
                    "worker %d (pid %d) exited with %s; restarting it", index, worker.pid, worker.returncode
                )
                self.workers[index] = self._spawn(index, environ)
                self.started[index] = time.monotonic()
        self._stop_workers()
        return 0

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _stop_workers(self) -> None:
        running = [w for w in self.workers if w is not None and w.poll() is None]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        for worker in running:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for sock in [*self.api, *([self.metrics] if self.metrics is not None else [])]:
            sock.close()
        if self.board is not None:
            self.board.close()


def supervise(settings: Settings, count: int, host: str, ports: Sequence[int], serve_args: list[str]) -> int:
    """Bind the ports, run ``count`` workers until SIGTERM/SIGINT; the exit code."""
    api = [bind(host, port) for port in ports]
    metrics = (
        bind(settings.metrics_host, settings.metrics_port) if settings.metrics_port is not None else None
    )
    environ = dict(os.environ)
    own_metrics_dir = None
    if not environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_metrics_dir = tempfile.mkdtemp(prefix="voxgate-metrics-")
        environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    try:
        return Supervisor(settings, count, serve_args, api, metrics, LoadBoard.create(count)).run(environ)
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
