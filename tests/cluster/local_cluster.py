"""A real voxgate cluster on loopback for the tests, started and stopped with ``deploy/local-cluster.sh``.

The script starts PostgreSQL, Redis, N ``voxgate serve`` nodes, HAProxy and (optionally) Kamailio, every one
on ports picked free here, with its logs and pids in one folder. The tests talk to the cluster through
HAProxy (``url``) or to a node directly (``node_url``), read HAProxy's log to see which node served what,
and ask HAProxy's runtime API for its view of the nodes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local-cluster.sh"
TOOLS = REPO / "scripts" / "cluster-tools.sh"
PASSWORD = "local-cluster-test-password"

# one HAProxy log line (option httplog): client, date, frontend, backend/server, timers, status, ...,
# the captures {request}, {response} and the request line
LOG_LINE = re.compile(
    r"\S+ \[[^\]]+\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) \S+ (?P<status>-?\d+) .*?"
    r"\{(?P<named>[^}]*)\} \{(?P<created>[^}]*)\} \"(?P<method>\S+) (?P<path>\S+)"
)


def free_tcp_ports(count: int) -> list[int]:
    """``count`` consecutive TCP ports on 127.0.0.1 that are free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65000:
            continue
        taken = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
        return list(range(base, base + count))
    raise RuntimeError("no run of free TCP ports")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LogLine:
    server: str
    status: int
    named: str  # the stream uuid the request named (path or JSON body), or ""
    created: str  # the stream uuid the response created (X-Voxgate-Stream), or ""
    method: str
    path: str


@dataclass
class LocalCluster:
    """A started ``deploy/local-cluster.sh`` cluster; :meth:`stop` ends it."""

    folder: Path
    env: dict[str, str]
    nodes: int
    http_port: int
    node_port: int
    sip_port: int

    @classmethod
    def start(
        cls, folder: Path, model_dir: Path, *, nodes: int = 2, kamailio: bool = False, **extra: str
    ) -> LocalCluster:
        subprocess.run(
            ["bash", str(TOOLS), "postgresql", "redis-server", "haproxy", "kamailio", "sipp"],
            check=True,
            timeout=900,
        )
        ports = free_tcp_ports(nodes + 4)
        http_port, pg_port, redis_port, node_port = ports[0], ports[1], ports[2], ports[3] - 1
        sip_port = free_udp_port()
        env = {
            **os.environ,
            "VOXGATE_CLUSTER_DIR": str(folder),
            "VOXGATE_CLUSTER_NODES": str(nodes),
            "VOXGATE_CLUSTER_HTTP_PORT": str(http_port),
            "VOXGATE_CLUSTER_NODE_PORT": str(node_port),
            "VOXGATE_CLUSTER_PG_PORT": str(pg_port),
            "VOXGATE_CLUSTER_REDIS_PORT": str(redis_port),
            "VOXGATE_CLUSTER_SIP_PORT": str(sip_port),
            "VOXGATE_CLUSTER_NODE_SIP_PORT": str(free_udp_port()),
            "VOXGATE_CLUSTER_KAMAILIO": "1" if kamailio else "0",
            "VOXGATE_PYTHON": sys.executable,
            "VOXGATE_MODEL_DIR": str(model_dir),
            "VOXGATE_ADMIN_PASSWORD": PASSWORD,
            "VOXGATE_LOG_LEVEL": "warning",
            **extra,
        }
        env.pop("VOXGATE_DATABASE_URL", None)  # the script's own throwaway PostgreSQL
        cluster = cls(folder, env, nodes, http_port, node_port, sip_port)
        cluster.run("start", timeout_s=600)
        return cluster

    def run(self, *args: str, timeout_s: float = 120) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"local-cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    def stop(self) -> None:
        """``local-cluster.sh stop``, and a check that it was clean: every part's process group gone (zombies
        aside: their parent, the script, is gone) and the throwaway database's folder removed."""
        groups = [int(f.read_text()) for f in (self.folder / "run").glob("*.pid")]
        pg_dir = self.folder / "run" / "postgres.dir"
        database = Path(pg_dir.read_text().strip()) if pg_dir.exists() else None
        self.run("stop")
        alive = [pid for pid in groups if _alive(pid)]
        assert not alive, f"still running after stop: {alive}"
        assert not list((self.folder / "run").glob("*.pid"))
        assert database is None or not database.exists(), f"{database} left behind"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def node_url(self, k: int) -> str:
        return f"http://127.0.0.1:{self.node_port + k}"

    def pid(self, name: str) -> int:
        return int((self.folder / "run" / f"{name}.pid").read_text())

    def kill(self, name: str) -> None:
        """``kill -9`` of a part's whole process group (a crash, not a shutdown)."""
        os.killpg(self.pid(name), signal.SIGKILL)

    def login(self, base_url: str | None = None) -> dict[str, str]:
        response = httpx.post(
            f"{base_url or self.url}/rest-auth/login/",
            json={"username": "admin", "password": PASSWORD},
            timeout=30,
        )
        response.raise_for_status()
        return {"Authorization": f"Token {response.json()['key']}"}

    def proxy_log(self) -> list[LogLine]:
        lines = []
        for text in (self.folder / "logs" / "haproxy.log").read_text(errors="replace").splitlines():
            match = LOG_LINE.search(text)
            if match is not None:
                lines.append(
                    LogLine(
                        match["server"], int(match["status"]), match["named"], match["created"],
                        match["method"], match["path"],
                    )
                )  # fmt: skip
        return lines

    def haproxy_api(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.folder / "run" / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers_up(self) -> dict[str, bool]:
        """HAProxy's view: node name -> up (operational state 2)."""
        state = {}
        for line in self.haproxy_api("show servers state voxgate_nodes").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[0].isdigit():
                state[fields[3]] = fields[5] == "2"
        return state

    def wait(self, condition: str, predicate: object, timeout_s: float) -> float:
        """Seconds until ``predicate()`` is true; AssertionError after ``timeout_s``."""
        assert callable(predicate)
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"{condition}: not within {timeout_s} s")
            time.sleep(0.05)
        return time.monotonic() - start


def _alive(pid: int) -> bool:
    """A process that runs (a zombie does not: it only waits for a parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
