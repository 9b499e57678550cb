"""One inference engine per process: VAD and the speaker networks for every live stream.

Doors only queue audio (:meth:`InferenceEngine.submit` costs an append); one worker thread takes
everything queued, runs each stream's stages in order (:meth:`SpeechPipeline.accept` → VAD →
:meth:`SpeechPipeline.gate` → embedding → :meth:`SpeechPipeline.add_embeddings`) and never holds the
event loop. The engine sees only each stream's :class:`~voxgate.streams.stages.SpeechPipeline`, never
its session: a session is handed :meth:`InferenceEngine.submit` as its ``submit`` callable, and
:meth:`InferenceEngine.settle` as its ``settle``: a reader that needs the voiceprint now (verify,
enroll) asks the worker to cut and embed the stream's settled tail (the pending speech after the
speaker paused, :meth:`SpeechPipeline.take_tail`) with the chunks of its next cycle, once. Measured on
this project's CPU (one onnxruntime thread, ``bench/README.md``):

- Silero VAD is stateful per stream but batches across streams: one call for 32 streams' windows costs
  129 µs per window instead of 426 µs alone, so the worker advances all streams a window at a time
  (one call per VAD rate: telephone-rate streams run VAD at 8 kHz, the others at 16 kHz).
- The speaker networks do *not* batch well on a CPU thread (8 chunks of 3 s in one call: ECAPA 1.4×,
  CAM++ 1.1× slower per chunk than one by one), so chunks run one call each by default
  (``embed_batch``; a batch groups chunks of equal length, never padding them).

Overload is visible, never silent: :attr:`InferenceEngine.backlog_s` (and each stream's
``backlog_s``) grows, and a stream whose own backlog passes ``max_backlog_s`` makes its door wait in
:meth:`submit` (backpressure on that stream only) instead of dropping its audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from voxgate.audio.types import FloatArray
from voxgate.audio.vad import WINDOW_S
from voxgate.errors import VoxgateError
from voxgate.streams.offline import DEFAULT_NICE, OfflineWorker
from voxgate.streams.stages import MAX_BACKLOG_S, SpeechPipeline
from voxgate.streams.threads import INFERENCE, name_this_thread

if TYPE_CHECKING:
    from voxgate.biometrics.engine import Biometrics

log = logging.getLogger(__name__)

MAX_BATCH = 64  # VAD windows per call (streams advanced together)
WINDOWS_PER_TURN = 32  # ≈ 1 s of a stream's audio per worker cycle: a long upload cannot starve the rest
# A cycle that caught up waits for this much audio of every stream to gather before the next one, so
# VAD calls are shared by many streams (each stream sends its audio at its own moments). Costs at most
# this much delay between the audio and the voiceprint.
CYCLE_S = 0.2
BACKPRESSURE_POLL_S = 0.02


@dataclass
class EngineStats:
    """Counters since start (read by ``/api/v2/status`` and the density benchmark)."""

    cycles: int = 0
    vad_calls: int = 0
    vad_windows: int = 0
    chunks: int = 0
    chunk_errors: int = 0
    tails: int = 0  # settled tails embedded on demand (also counted in chunks)
    busy_s: float = 0.0  # wall time the worker spent working (not waiting)

    @property
    def mean_vad_batch(self) -> float:
        return self.vad_windows / self.vad_calls if self.vad_calls else 0.0


class EngineMeter(Protocol):
    """Who hears how the engine works (the server's metrics, :mod:`voxgate.service.metrics`). Called on the
    worker thread, a few times per cycle: each call must be cheap and must not block."""

    def cycle(self, seconds: float) -> None:
        """One cycle's wall time (its work, not its wait)."""

    def inference(self, model_id: str, seconds: float) -> None:
        """Time spent in one model call (``vad`` or a speaker model)."""

    def speech(self, seconds: float) -> None:
        """Net speech embedded into streams' voiceprints."""


class _Unheard:
    def cycle(self, seconds: float) -> None:
        pass

    def inference(self, model_id: str, seconds: float) -> None:
        pass

    def speech(self, seconds: float) -> None:
        pass


@dataclass
class _TailRequest:
    """Settles of one stream waiting for the worker (one request however many settles wait on it)."""

    force: bool
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]


class InferenceEngine:
    """Runs the analysis of every attached stream on one worker thread, batched across streams."""

    def __init__(
        self,
        biometrics: Biometrics,
        *,
        max_batch: int = MAX_BATCH,
        embed_batch: int = 1,
        max_backlog_s: float = MAX_BACKLOG_S,
        cycle_s: float = CYCLE_S,
        meter: EngineMeter | None = None,
        offline_nice: int = DEFAULT_NICE,
    ) -> None:
        if max_batch < 1 or embed_batch < 1 or max_backlog_s <= 0:
            raise ValueError("max_batch and embed_batch must be >= 1 and max_backlog_s > 0")
        self.biometrics = biometrics
        # Recordings (imports) are the engine's offline work: one job at a time on one low-priority thread,
        # so a burst of imports takes the CPU live calls leave (bench/README.md, "Imports beside live calls").
        self.offline = OfflineWorker(nice=offline_nice)
        self.max_batch = max_batch
        self.embed_batch = embed_batch
        self.max_backlog_s = max_backlog_s
        self.cycle_s = cycle_s
        self.meter: EngineMeter = meter or _Unheard()
        self.stats = EngineStats()
        self._inbox: deque[tuple[SpeechPipeline, FloatArray]] = deque()
        # accepted, not yet through VAD: each stream's windows at its VAD rate, and at 16 kHz (row by row)
        self._windows: dict[SpeechPipeline, tuple[FloatArray, FloatArray]] = {}
        self._wake = threading.Event()
        # set by a settle (and by stop): the worker does not wait out cycle_s while a tail is asked for
        self._hurry = threading.Event()
        self._tails_lock = threading.Lock()
        self._tail_requests: dict[SpeechPipeline, _TailRequest] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._queued_s = 0.0  # audio in the inbox, seconds (approximate across threads; for display)
        self._started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._hurry.clear()
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
            self._thread.start()
            self.offline.start()

    def stop(self) -> None:
        """Stop the worker after its current cycle; queued audio is dropped (streams are closing)."""
        self._stopping = True
        self._wake.set()
        self._hurry.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._tails_lock:  # nobody waits on a stopped engine
            requests = list(self._tail_requests.values())
            self._tail_requests.clear()
        self._complete(requests)
        self.offline.stop()  # waits up to 30 s for a running import; waiting ones fail with NotRunning

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def backlog_s(self) -> float:
        """Audio of all streams waiting for VAD, seconds. Near zero when the engine keeps up."""
        waiting = sum(len(windows) for _, windows in list(self._windows.values())) * WINDOW_S
        return max(self._queued_s, 0.0) + waiting

    # -- from the event loop -------------------------------------------------------------------------

    async def submit(self, stream: SpeechPipeline, samples: FloatArray) -> None:
        """Queue a stream's audio (native rate); waits while that stream is ``max_backlog_s`` behind.
        A session's ``submit`` (:data:`voxgate.streams.stages.Submit`)."""
        while (
            stream.backlog_s > self.max_backlog_s
            and not stream.closed
            and self.running
            and not self._stopping
        ):
            await asyncio.sleep(BACKPRESSURE_POLL_S)
        if not self.running:
            raise RuntimeError("the inference engine is not running")
        self._queued_s += samples.size / stream.sample_rate_hz
        stream.queued(samples.size)
        self._inbox.append((stream, samples))
        self._wake.set()

    async def settle(
        self, stream: SpeechPipeline, *, force: bool = False, wait: bool = True, timeout_s: float = 2.0
    ) -> None:
        """Have the stream's settled tail (:meth:`SpeechPipeline.tail_due`) embedded, once: returns when
        the worker has taken the audio submitted so far through VAD, cut the tail due then (if any) and
        embedded it with its cycle's chunks; after ``timeout_s`` at most (the caller reads what is there).
        Costs no round trip when nothing is due and nothing of the stream is being analysed. Concurrent
        settles of one stream share one request. ``wait=False`` only asks: the tail is embedded in the
        worker's next cycle and a later read finds it (a verify poll that already has a verdict does not
        wait for the engine: measured at 26 streams per core, waiting took verify p99 to 2 s). A session's
        ``settle`` (:class:`voxgate.streams.stages.Settle`)."""
        if not self.running or self._stopping or stream.closed:
            return
        if not stream.working and not stream.tail_due(force):
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._tails_lock:
            request = self._tail_requests.get(stream)
            if request is None:
                self._tail_requests[stream] = _TailRequest(force, [(loop, future)])
            else:
                request.force = request.force or force
                request.waiters.append((loop, future))
        self._wake.set()
        if not wait:
            return  # the worker still answers the future; nobody awaits it
        self._hurry.set()
        await asyncio.wait({future}, timeout=timeout_s)

    # -- the worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread(INFERENCE)
        while not self._stopping:
            if not self._inbox and not self._windows and not self._tail_requests:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            started = time.perf_counter()
            try:
                self._cycle()
            except Exception:  # a bug must not silently stop every stream's analysis
                log.exception("inference cycle failed")
            self.stats.cycles += 1
            spent = time.perf_counter() - started
            self.stats.busy_s += spent
            self.meter.cycle(spent)
            if not self._windows and not self._tail_requests and spent < self.cycle_s:
                self._hurry.wait(self.cycle_s - spent)  # a settle (or stop) cuts the wait short
            self._hurry.clear()

    def _cycle(self) -> None:
        self._take_inbox()
        chunks = self._vad_turn()
        answered, tails = self._take_tails()
        try:
            self._embed(chunks, tails)
        finally:
            self._complete(answered)

    def _take_tails(self) -> tuple[list[_TailRequest], list[tuple[SpeechPipeline, FloatArray, float]]]:
        """The tail requests whose stream has no audio left before VAD (nothing in the inbox, no windows
        waiting), and the tails they cut; a request of a stream with audio still waiting stays for the
        next cycle, so a settle after the last audio includes that audio."""
        answered: list[_TailRequest] = []
        tails: list[tuple[SpeechPipeline, FloatArray, float]] = []
        with self._tails_lock:
            if not self._tail_requests:
                return answered, tails
            ready = [
                (stream, request)
                for stream, request in self._tail_requests.items()
                if stream.closed or (stream.backlog_s == 0 and stream not in self._windows)
            ]
            for stream, _ in ready:
                del self._tail_requests[stream]
        for stream, request in ready:
            answered.append(request)
            if stream.closed:
                continue
            try:
                tail = stream.take_tail(request.force)
            except Exception:
                log.exception("stream tail not cut", extra={"stream_uuid": stream.uuid})
                continue
            if tail is not None:
                tails.append((stream, *tail))
        return answered, tails

    @staticmethod
    def _complete(requests: list[_TailRequest]) -> None:
        """Wake the settles waiting on ``requests`` (each on its own event loop)."""
        for request in requests:
            for loop, future in request.waiters:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_resolve, future)

    def _take_inbox(self) -> None:
        """Move queued audio through each stream's resampler into its VAD windows, in arrival order."""
        while self._inbox:
            stream, samples = self._inbox.popleft()
            self._queued_s -= samples.size / stream.sample_rate_hz
            if stream.closed:
                self._windows.pop(stream, None)
                stream.dequeued(samples.size)
                continue
            try:
                vad_windows, windows = stream.accept(samples)
            except Exception:
                log.exception("stream audio not accepted", extra={"stream_uuid": stream.uuid})
                vad_windows = windows = np.zeros((0, 0), dtype=np.float32)
            if len(windows):
                held = self._windows.get(stream)
                self._windows[stream] = (
                    (vad_windows, windows)
                    if held is None
                    else (np.concatenate([held[0], vad_windows]), np.concatenate([held[1], windows]))
                )
            # counted as waiting before it leaves the queue: the stream never looks idle in between
            stream.waiting_windows = self._waiting(stream)
            stream.dequeued(samples.size)

    def _waiting(self, stream: SpeechPipeline) -> int:
        held = self._windows.get(stream)
        return 0 if held is None else len(held[1])

    def _vad_turn(self) -> list[tuple[SpeechPipeline, FloatArray, float]]:
        """Up to ``WINDOWS_PER_TURN`` windows of every stream, a window of each stream per VAD call (one
        call per VAD rate: 8 and 16 kHz windows do not share one)."""
        vad = self.biometrics.vad
        turn: dict[SpeechPipeline, tuple[FloatArray, FloatArray]] = {}
        for stream, (vad_windows, windows) in list(self._windows.items()):
            if stream.closed:
                del self._windows[stream]
                stream.waiting_windows = 0
                continue
            turn[stream] = (vad_windows[:WINDOWS_PER_TURN], windows[:WINDOWS_PER_TURN])
            if len(windows) > WINDOWS_PER_TURN:
                self._windows[stream] = (vad_windows[WINDOWS_PER_TURN:], windows[WINDOWS_PER_TURN:])
            else:
                del self._windows[stream]
        chunks: list[tuple[SpeechPipeline, FloatArray, float]] = []
        for step in range(WINDOWS_PER_TURN):
            by_rate: dict[int, list[tuple[SpeechPipeline, FloatArray, FloatArray]]] = {}
            for s, (vad_windows, windows) in turn.items():
                if step < len(windows) and not s.closed:
                    by_rate.setdefault(s.vad_rate_hz, []).append((s, vad_windows[step], windows[step]))
            if not by_rate:
                break
            for active in by_rate.values():
                for start in range(0, len(active), self.max_batch):
                    batch = active[start : start + self.max_batch]
                    stacked = np.stack([vad_window for _, vad_window, _ in batch])  # (batch, 512 or 256)
                    started = time.perf_counter()
                    probabilities = vad.step(stacked, [s.vad_state for s, _, _ in batch])
                    self.meter.inference("vad", time.perf_counter() - started)
                    self.stats.vad_calls += 1
                    self.stats.vad_windows += len(batch)
                    for (stream, _, window), probability in zip(batch, probabilities.tolist(), strict=True):
                        chunk = stream.gate(window, probability)
                        if chunk is not None:
                            chunks.append((stream, *chunk))
        for stream in turn:  # the turn's windows stayed counted until their chunks were in flight
            stream.waiting_windows = self._waiting(stream)
        return chunks

    def _embed(
        self,
        chunks: list[tuple[SpeechPipeline, FloatArray, float]],
        tails: Sequence[tuple[SpeechPipeline, FloatArray, float]] = (),
    ) -> None:
        """Embed the cycle's chunks, then its tails (the same way: a tail is one more chunk)."""
        models = self.biometrics.models
        pieces = [*chunks, *tails]
        first_tail = len(chunks)
        for start in range(0, len(pieces), self.embed_batch):
            batch = pieces[start : start + self.embed_batch]
            vectors: dict[str, FloatArray] = {}
            try:
                for model_id, model in models.items():
                    started = time.perf_counter()
                    vectors[model_id] = (
                        model.embed(batch[0][1])[None]
                        if len(batch) == 1
                        else model.embed_batch([speech for _, speech, _ in batch])
                    )
                    self.meter.inference(model_id, time.perf_counter() - started)
            except (VoxgateError, ValueError) as exc:  # a degenerate chunk: skip it, keep the streams
                self.stats.chunk_errors += len(batch)
                log.warning("stream chunks not embedded: %s", exc)
                for stream, _, _ in batch:
                    stream.chunk_failed()
                continue
            for row, (stream, _, speech_s) in enumerate(batch):
                stream.add_embeddings({m: v[row] for m, v in vectors.items()}, speech_s)
            self.stats.chunks += len(batch)
            self.stats.tails += len(range(max(start, first_tail), start + len(batch)))
            self.meter.speech(sum(speech_s for _, _, speech_s in batch))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
