"""Real `voxgate serve` processes on loopback for the cluster tests: one PostgreSQL, one Redis, N nodes.

Each node is a subprocess with its own data directory, node id and free port, the same secrets key
(every node decrypts the same stored secrets) and this checkout on ``PYTHONPATH``. :func:`start_node`
returns once the node prints its address; :meth:`Node.stop` ends it (``kill=True``: ``kill -9``, as a crash).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"voxgate: listening on (http://127\.0\.0\.1:\d+)")


def cluster_env(database_url: str, redis_url: str, model_dir: Path, password: str) -> dict[str, str]:
    """What every node of one test cluster shares."""
    return {
        "VOXGATE_DATABASE_URL": database_url,
        "VOXGATE_REDIS_URL": redis_url,
        "VOXGATE_MODEL_DIR": str(model_dir),
        "VOXGATE_ADMIN_PASSWORD": password,
        "VOXGATE_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "VOXGATE_LOG_LEVEL": "warning",
        # streams wait while others are fed (slow on a busy machine): no idle or first-audio timeout in a test
        "VOXGATE_STREAM_IDLE_TIMEOUT_S": "120",
        "VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S": "120",
        "VOXGATE_WORKERS": "1",  # one process per node (with Redis the default is one per core)
        "VOXGATE_CACHE_TTL_S": "0",  # a restore through one node is seen by the other at once
        "VOXGATE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",  # the tests' webhook receiver
    }


@dataclass
class Node:
    node_id: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_node(
    node_id: str, folder: Path, shared: dict[str, str], *, args: tuple[str, ...] = (), timeout_s: float = 120
) -> Node:
    """One node; raises with its log if it does not come up."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **shared,
        "VOXGATE_DATA_DIR": str(folder),
        "VOXGATE_NODE_ID": node_id,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voxgate", "serve", "--port", "0", *args],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout_s
    while not (found := LISTENING.search(log_path.read_text(errors="replace"))):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait()
            raise RuntimeError(f"node {node_id} did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    return Node(node_id, process, found.group(1), log_path)
