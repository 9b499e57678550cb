"""The Prometheus metrics module: counters where things happen, state read at scrape time, multi-process mode."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from voxgate.service import metrics
from voxgate.service.runtime import Runtime
from voxgate.service.webhooks import Delivery, WebhookSender
from voxgate.settings import Settings
from voxgate.store.db import Store
from voxgate.streams import StreamRegistry, StreamType
from voxgate.telephony.instances import PbxInstances

REPO = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def scraped(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels (the text format parsed as Prometheus would)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


# -- fakes of the runtime's parts the collector reads -----------------------------------------------------


@dataclass
class FakeSession:
    type: StreamType
    speech_s: float = 0.0
    capped: bool = False


@dataclass
class FakeEngine:
    backlog_s: float = 0.0
    running: bool = True


@dataclass
class FakeRegistry:
    sessions: list[FakeSession]
    engine: FakeEngine = field(default_factory=FakeEngine)

    def all(self) -> list[FakeSession]:
        return self.sessions


@dataclass
class FakeRegistration:
    state: str


@dataclass
class FakeAgent:
    registration: FakeRegistration


@dataclass
class FakeInstances:
    agents: dict[str, FakeAgent]


def runtime_with(tmp_path: Path, sessions: list[FakeSession], backlog_s: float = 0.0) -> Runtime:
    runtime = Runtime(Settings(data_dir=tmp_path, min_verify_speech_s=3.0, max_streams=7))
    runtime.registry = cast(StreamRegistry, FakeRegistry(sessions, FakeEngine(backlog_s)))
    runtime.pbx_instances = cast(
        PbxInstances,
        FakeInstances(
            {
                "pbx-a": FakeAgent(FakeRegistration("registered")),
                "pbx-b": FakeAgent(FakeRegistration("failed")),
            }
        ),
    )
    return runtime


def test_state_is_read_at_scrape_time(tmp_path: Path) -> None:
    sessions = [
        FakeSession(StreamType.HTTP, speech_s=1.0),
        FakeSession(StreamType.HTTP, speech_s=4.0),
        FakeSession(StreamType.SIP, speech_s=60.0, capped=True),
        FakeSession(StreamType.WEBSOCKET, speech_s=3.0),
    ]
    runtime = runtime_with(tmp_path, sessions, backlog_s=2.5)
    runtime.locked = True
    got = scraped(metrics.render(runtime))

    def streams(kind: str, state: str) -> float:
        return got[("voxgate_streams", (("state", state), ("type", kind)))]

    assert streams("HTTP", "collecting") == 1 and streams("HTTP", "ready") == 1
    assert streams("SIP", "capped") == 1 and streams("WebSocket", "ready") == 1
    assert streams("SIP", "collecting") == 0, "every type and state is there, 0 when empty"
    assert sum(v for (n, _), v in got.items() if n == "voxgate_streams") == 4
    assert got[("voxgate_streams_limit", ())] == 7
    assert got[("voxgate_engine_backlog_seconds", ())] == 2.5
    assert got[("voxgate_engine_running", ())] == 1
    assert got[("voxgate_sip_registrations", (("pbx", "pbx-a"), ("state", "registered")))] == 1
    assert got[("voxgate_sip_registrations", (("pbx", "pbx-a"), ("state", "failed")))] == 0
    assert got[("voxgate_sip_registrations", (("pbx", "pbx-b"), ("state", "failed")))] == 1
    assert got[("voxgate_maintenance", ())] == 1
    assert got[("voxgate_events_queued", ())] == 0, "the store is not open: nothing queued"
    assert 0 < got[("voxgate_data_dir_free_bytes", ())] <= got[("voxgate_data_dir_size_bytes", ())]
    assert ("process_resident_memory_bytes", ()) in got and ("process_cpu_seconds_total", ()) in got

    sessions.pop(0)  # nothing to update: the next scrape sees the change
    assert (
        scraped(metrics.render(runtime))[("voxgate_streams", (("state", "collecting"), ("type", "HTTP")))]
        == 0
    )


def test_a_runtime_that_is_not_running_still_scrapes(tmp_path: Path) -> None:
    got = scraped(metrics.render(Runtime(Settings(data_dir=tmp_path))))
    assert got[("voxgate_engine_running", ())] == 0
    assert sum(v for (n, _), v in got.items() if n == "voxgate_streams") == 0
    assert not [k for k in got if k[0] == "voxgate_sip_registrations"]


def test_events_counted_where_they_happen() -> None:
    before = value("voxgate_verifications_total", result="verified")
    metrics.verified("verified")
    metrics.verified("verified")
    assert value("voxgate_verifications_total", result="verified") == before + 2

    before = value("voxgate_enrollments_total", source="stream", result="created")
    metrics.enrolled("stream", "created")
    assert value("voxgate_enrollments_total", source="stream", result="created") == before + 1

    before = value("voxgate_webhook_deliveries_total", kind="verify", outcome="failed")
    metrics.webhook("verify", metrics.OUTCOMES_FAILED)
    assert value("voxgate_webhook_deliveries_total", kind="verify", outcome="failed") == before + 1

    before = value("voxgate_sip_calls_total", pbx="p1", status="486")
    metrics.sip_call("p1", 486)
    assert value("voxgate_sip_calls_total", pbx="p1", status="486") == before + 1

    before = value("voxgate_verify_latency_seconds_count")
    metrics.verify_latency(0.003)
    assert value("voxgate_verify_latency_seconds_count") == before + 1
    assert value("voxgate_verify_latency_seconds_bucket", le="0.005") >= 1

    before = value("voxgate_http_requests_total", method="GET", route="/x/{id}", status="200")
    for _ in range(3):
        metrics.http_request("GET", "/x/{id}", 200, 0.01)
    assert value("voxgate_http_requests_total", method="GET", route="/x/{id}", status="200") == before + 3
    assert value("voxgate_http_request_duration_seconds_count", method="GET", route="/x/{id}") >= 3


def test_engine_meter() -> None:
    cycles = value("voxgate_engine_cycle_seconds_count")
    vad = value("voxgate_inference_seconds_total", model="vad")
    speech = value("voxgate_speech_analysed_seconds_total", source="stream")
    metrics.ENGINE_METER.cycle(0.02)
    metrics.ENGINE_METER.inference("vad", 0.001)
    metrics.ENGINE_METER.inference("vad", 0.002)
    metrics.ENGINE_METER.speech(3.0)
    assert value("voxgate_engine_cycle_seconds_count") == cycles + 1
    assert value("voxgate_inference_seconds_total", model="vad") == pytest.approx(vad + 0.003)
    assert value("voxgate_speech_analysed_seconds_total", source="stream") == speech + 3.0


@pytest.mark.asyncio
async def test_store_errors_are_counted_by_class() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    metrics.watch_store(engine)
    metrics.watch_store(engine)  # once per engine, however often it is asked
    before = value("voxgate_store_errors_total", error="OperationalError")
    try:
        async with engine.connect() as connection:
            with pytest.raises(OperationalError):
                await connection.execute(text("SELECT * FROM no_such_table"))
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert value("voxgate_store_errors_total", error="OperationalError") == before + 1


@pytest.mark.asyncio
async def test_webhook_outcomes_are_counted(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    receiver = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = receiver.sockets[0].getsockname()[1]
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    sender = WebhookSender(store.sessions, retries=0, allow=[ipaddress.ip_network("127.0.0.0/8")])
    delivered = value("voxgate_webhook_deliveries_total", kind="enroll", outcome="delivered")
    failed = value("voxgate_webhook_deliveries_total", kind="enroll", outcome="failed")
    sender.start()
    try:
        sender.submit(Delivery("s-1", "enroll", f"http://127.0.0.1:{port}/hook", "secret", b"{}"))
        sender.submit(Delivery("s-2", "enroll", f"http://127.0.0.1:{_closed_port()}/hook", "secret", b"{}"))
        for _ in range(200):
            if not (sender.busy("s-1") or sender.busy("s-2")):
                break
            await asyncio.sleep(0.05)
    finally:
        await sender.stop()
        receiver.close()
        await receiver.wait_closed()
        await store.close()
    assert value("voxgate_webhook_deliveries_total", kind="enroll", outcome="delivered") == delivered + 1
    assert value("voxgate_webhook_deliveries_total", kind="enroll", outcome="failed") == failed + 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- multi-process mode -------------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from voxgate.service import metrics
    from voxgate.service.runtime import Runtime
    from voxgate.settings import Settings

    assert metrics.MULTIPROCESS
    action, data = sys.argv[1], Path(sys.argv[2])
    if action == "work":
        metrics.verified("verified")
        metrics.http_request("POST", "/api/v2/verify", 200, 0.004)
        metrics.publish(Runtime(Settings(data_dir=data, max_streams=5)))
        print(os.getpid())
    elif action == "dead":
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(int(sys.argv[3]))
    else:
        sys.stdout.write(metrics.render(None).decode())
    """
)


def _run(multiproc_dir: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    files, data = tmp_path / "metrics", tmp_path / "data"
    files.mkdir()
    data.mkdir()
    first = _run(files, "work", str(data)).strip()
    _run(files, "work", str(data))

    got = scraped(_run(files, "scrape", str(data)).encode())
    assert got[("voxgate_verifications_total", (("result", "verified"),))] == 2
    route = (("method", "POST"), ("route", "/api/v2/verify"), ("status", "200"))
    assert got[("voxgate_http_requests_total", route)] == 2
    assert got[("voxgate_streams_limit", ())] == 5, "the same in every worker: not summed"
    assert got[("voxgate_data_dir_free_bytes", ())] > 0
    assert got[("voxgate_streams", (("state", "ready"), ("type", "HTTP")))] == 0
    memory = got[("process_resident_memory_bytes", ())]
    assert memory > 0

    _run(files, "dead", str(data), first)  # a worker that stopped leaves the live sums, not the counters
    after = scraped(_run(files, "scrape", str(data)).encode())
    assert after[("voxgate_verifications_total", (("result", "verified"),))] == 2
    assert 0 < after[("process_resident_memory_bytes", ())] < memory
    json.dumps(list(map(str, after)))  # every key printable (labels are plain strings)
