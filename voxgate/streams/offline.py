"""Offline work (whole recordings) on one low-priority thread, beside the live streams.

Enrolling from recordings decodes and embeds seconds to minutes of audio in one go. On the default thread
pool a burst of imports would run several at once, at the priority of the inference engine's thread and
the event loop, and take CPU from live calls. :class:`OfflineWorker` runs such jobs instead:

- one at a time, first in first out, on one dedicated thread; a burst just waits its turn (the queue is
  not bounded: the doors bound what one request may send);
- at a lower OS scheduling priority (Linux: the thread's nice value is raised by ``nice``, default 10;
  against a thread at nice 0 that wants the same core it gets about a tenth of it, CFS weight 110 against
  1024, and it still uses any idle CPU);
- awaited from the event loop with :meth:`OfflineWorker.run`, which returns the job's result or raises its
  exception. Cancelling the awaiting coroutine drops a job that has not started; one that has started runs
  to the end on the worker thread (its result is discarded), so the thread is never killed mid-job.

Nothing here knows what a job does. It is meant to be owned by the inference engine (one per process),
with the decoding and embedding of imported recordings routed through it.

Measured (``bench/offline_gil.py``, ``bench/import_load.py``; bench/README.md): onnxruntime releases the GIL
while a model runs, and decoding (soundfile) and resampling (soxr) are short, so a job leaves the GIL to the
event loop and the engine's thread almost all the time. The exception is kaldi-native-fbank (CAM++
features), which holds it for its whole call (about 1 ms per second of speech). On a busy core the lowered
priority is what keeps the engine current: one job at a time at normal priority still let the streams fall
to their backlog limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from voxgate.errors import NotRunning
from voxgate.streams.threads import OFFLINE, name_this_thread

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_NICE = 10
MAX_NICE = 19  # Linux's lowest priority
STOP_TIMEOUT_S = 30.0

_priority_warned = False  # the "could not lower the priority" warning is logged once per process


class _Job:
    __slots__ = ("call", "future")

    def __init__(self, call: Callable[[], Any], future: concurrent.futures.Future[Any]) -> None:
        self.call = call
        self.future = future


class OfflineWorker:
    """Runs blocking jobs one at a time, in arrival order, on one thread of lowered OS priority.

    ``nice`` is added to the nice value of the thread that calls :meth:`start` (capped at 19; 0 leaves the
    priority alone). It takes effect on Linux, where a thread has its own nice value; elsewhere, or when
    the system refuses, the worker runs at normal priority and says so once in the log.
    """

    def __init__(self, *, nice: int = DEFAULT_NICE, name: str = "offline-worker") -> None:
        if not 0 <= nice <= MAX_NICE:
            raise ValueError(f"nice must be between 0 and {MAX_NICE}, got {nice}")
        self.nice = nice
        self.name = name
        self.done = 0  # jobs finished, with a result or an exception
        self.failed = 0  # of which raised
        self.busy_s = 0.0  # wall time spent running jobs
        self.thread_nice: int | None = None  # the worker thread's nice value once it runs (None: unknown)
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by stop(): a thread of an older generation exits
        self._accepting = False

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._accepting:
                return
            self._accepting = True
            generation = self._generation
        ready = threading.Event()
        thread = threading.Thread(target=self._work, args=(generation, ready), name=self.name, daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._accepting = False
            raise
        self._thread = thread
        ready.wait()  # the priority is set before the first job can run

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Refuse new jobs, fail the waiting ones (:class:`NotRunning`), let the running one end.

        Waits up to ``timeout`` seconds for the running job; a job that takes longer finishes on its own
        (the thread is a daemon) and its result is still delivered.
        """
        with self._lock:
            self._accepting = False
            self._generation += 1
            waiting = list(self._jobs)
            self._jobs.clear()
            self._lock.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(NotRunning("the offline worker stopped before this job ran"))
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "offline worker: a job is still running after %.0f s; it finishes on its own", timeout
                )

    @property
    def running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Jobs waiting to start (not counting the one running, nor jobs whose caller went away)."""
        return sum(1 for job in list(self._jobs) if not job.future.cancelled())

    # -- from the event loop -------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the worker after the jobs queued before it; its result or exception.

        The job sees the caller's context variables, as with :func:`asyncio.to_thread`.
        """
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if not self._accepting:
                raise NotRunning("the offline worker is not running")
            self._jobs.append(_Job(call, future))
            self._lock.notify()
        # Cancelling this await cancels `future`: a job that has not started is skipped; a running job
        # cannot be cancelled and finishes, its result dropped.
        return await asyncio.wrap_future(future)

    # -- the worker thread ---------------------------------------------------------------------------

    def _work(self, generation: int, ready: threading.Event) -> None:
        name_this_thread(OFFLINE)
        try:
            self.thread_nice = _lower_priority(self.nice)
        finally:
            ready.set()
        while True:
            with self._lock:
                while not self._jobs and self._generation == generation:
                    self._lock.wait()
                if self._generation != generation:
                    return
                job = self._jobs.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue  # its caller went away before it started
            started = time.perf_counter()
            result: Any = None
            error: BaseException | None = None
            try:
                result = job.call()
            except BaseException as exc:  # handed to the caller, as concurrent.futures does
                error = exc
            # the counters are up to date when the caller sees the outcome
            self.busy_s += time.perf_counter() - started
            self.done += 1
            if error is None:
                job.future.set_result(result)
            else:
                self.failed += 1
                job.future.set_exception(error)
            del job, result, error  # no reference to the job's data or outcome while the thread waits


def _lower_priority(nice: int) -> int | None:
    """Raise the calling thread's nice value by ``nice`` (capped at 19); returns its nice value after.

    Linux only: there ``setpriority(PRIO_PROCESS, tid)`` addresses one thread. Elsewhere the native thread
    id is not a process id, and the same call could renice an unrelated process.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        _warn_once(
            "offline worker: thread priority is not adjustable on %s; it runs at normal priority",
            sys.platform,
        )
        return None
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if nice:
            os.setpriority(os.PRIO_PROCESS, tid, min(current + nice, MAX_NICE))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as exc:  # e.g. a container or seccomp policy refusing it
        _warn_once(
            "offline worker: could not lower the thread's priority (%s); it runs at normal priority", exc
        )
        return None


def _warn_once(message: str, *args: object) -> None:
    global _priority_warned
    if not _priority_warned:
        _priority_warned = True
        log.warning(message, *args)
