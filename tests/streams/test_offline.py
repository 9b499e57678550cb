from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from voxgate.errors import NotRunning
from voxgate.streams import offline
from voxgate.streams.offline import OfflineWorker

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def worker() -> Iterator[OfflineWorker]:
    worker = OfflineWorker()
    worker.start()
    yield worker
    worker.stop(timeout=5)


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_results_come_back_in_order_one_at_a_time_on_one_thread(worker: OfflineWorker) -> None:
    gate = threading.Event()
    ran: list[int] = []
    threads: set[int] = set()
    active = 0
    most_active = 0

    def job(i: int, *, scale: int = 1) -> int:
        nonlocal active, most_active
        active += 1
        most_active = max(most_active, active)
        if i == 0:
            gate.wait(5)
        time.sleep(0.002)
        ran.append(i)
        threads.add(threading.get_ident())
        active -= 1
        return i * scale

    tasks = [asyncio.create_task(worker.run(job, i, scale=10)) for i in range(8)]
    await until(lambda: worker.queued == 7)  # the first runs and holds the rest back
    assert ran == []
    gate.set()
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(8)]
    assert ran == list(range(8))
    assert most_active == 1
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert (worker.queued, worker.done, worker.failed) == (0, 8, 0)
    assert worker.busy_s >= 8 * 0.002


@pytest.mark.asyncio
async def test_exceptions_reach_the_caller_and_the_worker_goes_on(worker: OfflineWorker) -> None:
    def fails() -> None:
        raise ValueError("not audio")

    with pytest.raises(ValueError, match="not audio"):
        await worker.run(fails)
    assert await worker.run(sum, [1, 2, 3]) == 6
    assert (worker.done, worker.failed) == (2, 1)


@pytest.mark.asyncio
async def test_the_caller_context_is_seen_by_the_job(worker: OfflineWorker) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    request_id.set("r-42")
    assert await worker.run(request_id.get) == "r-42"


@pytest.mark.asyncio
async def test_cancelling_the_caller_skips_a_waiting_job_and_lets_a_running_one_finish(
    worker: OfflineWorker,
) -> None:
    gate = threading.Event()
    started = threading.Event()
    finished: list[str] = []

    def job(name: str) -> str:
        if name == "running":
            started.set()
            gate.wait(5)
        finished.append(name)
        return name

    running = asyncio.create_task(worker.run(job, "running"))
    waiting = asyncio.create_task(worker.run(job, "waiting"))
    after = asyncio.create_task(worker.run(job, "after"))
    await until(lambda: started.is_set() and worker.queued == 2)
    running.cancel()
    waiting.cancel()
    for task in (running, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert worker.queued == 1  # the cancelled waiting job no longer counts
    gate.set()
    assert await after == "after"
    assert finished == ["running", "after"]  # the running job was not killed; the waiting one never ran
    assert worker.running
    assert await worker.run(job, "still working") == "still working"


@pytest.mark.asyncio
async def test_stop_fails_waiting_jobs_and_lets_the_running_one_end() -> None:
    worker = OfflineWorker()
    worker.start()
    gate = threading.Event()

    def job(i: int) -> int:
        if i == 0:
            gate.wait(5)
        return i

    tasks = [asyncio.create_task(worker.run(job, i)) for i in range(3)]
    await until(lambda: worker.queued == 2)
    stopping = asyncio.create_task(asyncio.to_thread(worker.stop, 5))
    await until(lambda: not worker.running)
    with pytest.raises(NotRunning):
        await worker.run(job, 9)
    gate.set()
    await stopping
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] == 0
    assert all(isinstance(o, NotRunning) for o in outcomes[1:])
    assert not worker.running and worker.done == 1

    worker.start()  # a stopped worker starts again
    try:
        assert await worker.run(job, 5) == 5
    finally:
        worker.stop(timeout=5)


@pytest.mark.asyncio
async def test_a_worker_not_started_refuses_jobs() -> None:
    with pytest.raises(NotRunning, match="not running"):
        await OfflineWorker().run(int)


@pytest.mark.skipif(not LINUX, reason="per-thread nice values are a Linux feature")
@pytest.mark.asyncio
async def test_the_worker_thread_runs_at_lower_priority_and_nothing_else_does() -> None:
    mine = thread_nice()
    worker = OfflineWorker(nice=10)
    worker.start()
    try:
        inside = await worker.run(thread_nice)
    finally:
        worker.stop(timeout=5)
    assert inside == min(mine + 10, 19) == worker.thread_nice
    assert thread_nice() == mine  # the event loop's thread (and the process) keep their priority
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == mine

    untouched = OfflineWorker(nice=0)
    untouched.start()
    try:
        assert await untouched.run(thread_nice) == mine
    finally:
        untouched.stop(timeout=5)


@pytest.mark.asyncio
async def test_a_refused_priority_change_is_logged_once_and_jobs_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(offline, "_priority_warned", False)
    monkeypatch.setattr(os, "setpriority", refuse, raising=False)
    monkeypatch.setattr(os, "getpriority", lambda *args: 0, raising=False)
    caplog.set_level(logging.WARNING, logger="voxgate.streams.offline")
    workers = [OfflineWorker(), OfflineWorker()]
    for w in workers:
        w.start()
    try:
        assert [await w.run(int, "7") for w in workers] == [7, 7]
    finally:
        for w in workers:
            w.stop(timeout=5)
    assert all(w.thread_nice is None for w in workers)
    warnings = [r for r in caplog.records if "priority" in r.getMessage()]
    assert len(warnings) == 1


def test_nice_outside_the_range_is_refused() -> None:
    with pytest.raises(ValueError, match="nice"):
        OfflineWorker(nice=-5)
    with pytest.raises(ValueError, match="nice"):
        OfflineWorker(nice=20)
