"""Fixtures of the telephony tests: a real Kamailio, real sipp, and voxgate's SIP agent in process."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from tests.telephony import peers
from voxgate.streams.session import InfoValue, StreamCapacity, StreamType
from voxgate.telephony.agent import AgentOptions, PbxConfig, SipAgent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests here (the Asterisk chroot) run only when asked for with ``-m slow``."""
    if "slow" in str(config.getoption("-m") or ""):
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords and here in item.path.parents:
            item.add_marker(skip)


class FakeStream:
    """Keeps every sample a call feeds (the round trip compares them with what sipp sent)."""

    def __init__(self, uuid: str, info: Mapping[str, InfoValue]) -> None:
        self.uuid = uuid
        self.info = dict(info)
        self.sample_rate_hz = 8000
        self.max_backlog_s = 5.0
        self.closed = False
        self.dropped_s = 0.0
        self.reason: str | None = None
        self.batches: list[npt.NDArray[np.float32]] = []

    async def feed(self, samples: npt.NDArray[np.float32]) -> None:
        self.batches.append(np.array(samples, dtype=np.float32))

    def touch(self) -> None:
        pass

    @property
    def audio(self) -> npt.NDArray[np.float32]:
        return np.concatenate(self.batches) if self.batches else np.zeros(0, np.float32)


class FakeRegistry:
    """The registry's create/close surface, recording streams instead of running the models."""

    def __init__(self, max_streams: int = 100) -> None:
        self.max_streams = max_streams
        self.streams: dict[str, FakeStream] = {}
        self.running: dict[str, FakeStream] = {}
        self.ended = asyncio.Event()

    async def create(
        self,
        type: StreamType,
        sample_rate_hz: int,
        info: Mapping[str, InfoValue] | None = None,
        *,
        uuid: str | None = None,
    ) -> FakeStream:
        assert type is StreamType.SIP and sample_rate_hz == 8000
        if len(self.running) >= self.max_streams:
            raise StreamCapacity(f"{len(self.running)} streams are running")
        stream = FakeStream(f"00000000-0000-4000-8000-{len(self.streams):012d}", info or {})
        self.streams[stream.uuid] = self.running[stream.uuid] = stream
        return stream

    async def close(self, stream_uuid: str, reason: str = "closed") -> FakeStream:
        stream = self.running.pop(stream_uuid)
        stream.closed, stream.reason = True, reason
        self.ended.set()
        return stream

    async def wait_closed(self, count: int, timeout_s: float = 30) -> None:
        async def closed() -> None:
            while sum(s.closed for s in self.streams.values()) < count:
                self.ended.clear()
                await self.ended.wait()

        await asyncio.wait_for(closed(), timeout_s)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Kamailio]:
    with peers.kamailio(tmp_path_factory.mktemp("kamailio")) as running:
        yield running


def pbx_config(proxy: peers.Kamailio, **overrides: object) -> PbxConfig:
    low, high = peers.free_port_range(64)
    values: dict[str, object] = {
        "id": "test-pbx",
        "host": "127.0.0.1",
        "port": proxy.port,
        "username": peers.USER,
        "password": peers.PASSWORD,
        "expires_s": 60,
        "rtp_port_min": low,
        "rtp_port_max": high,
        "local_host": "127.0.0.1",
    }
    values.update(overrides)
    return PbxConfig(**values)  # type: ignore[arg-type]


async def wait_registered(agent: SipAgent, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while agent.registration.state != "registered":
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not registered: {agent.registration}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest_asyncio.fixture
async def agent(proxy: peers.Kamailio, registry: FakeRegistry) -> AsyncIterator[SipAgent]:
    running = SipAgent(pbx_config(proxy), registry, AgentOptions(rtp_timeout_s=5))
    await running.start()
    try:
        await wait_registered(running)
        yield running
    finally:
        await running.stop()


async def run_sipp(
    command: list[str], workdir: Path, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode(errors="replace")
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*_errors.log"))
    return subprocess.CompletedProcess(command, process.returncode or 0, text[-3000:] + errors, "")


LIVE_PASSWORD = "telephony-live-password"


@pytest.fixture(scope="module")
def live_voxgate(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[str]:
    """A real `voxgate serve` on a free loopback port (SIP and RTP bound to loopback too); its base URL."""
    import os
    import sys
    import time

    import httpx

    data = tmp_path_factory.mktemp("voxgate")
    port = peers.free_udp_port()
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data),
        "VOXGATE_MODEL_DIR": str(model_dir),
        "VOXGATE_ADMIN_PASSWORD": LIVE_PASSWORD,
        "VOXGATE_LOG_LEVEL": "warning",
        "VOXGATE_SIP_BIND_HOST": "127.0.0.1",
        "VOXGATE_RTP_TIMEOUT_S": "5",
    }
    log_path = data / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voxgate", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
