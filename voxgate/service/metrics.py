"""Prometheus metrics of a voxgate process: what is counted where it happens, and what a scrape reads.

Two kinds, so that the hot path stays cheap:

- **Events** are counted where they happen, by the module-level counters and histograms below: a verify poll
  pays one counter increment and one histogram observation (plus the HTTP request's two), an engine cycle
  one observation and a counter increment per model call. The lower rooms (``streams``, ``telephony``) do
  not import this module: the runtime hands them :data:`ENGINE_METER` and :func:`sip_call`.
- **State** is read at scrape time by :class:`RuntimeCollector` from the :class:`Runtime`: live streams by
  type and state, the engine backlog, SIP registrations, the event-log queue, the data directory's free
  space, maintenance mode. Nothing is updated when a stream opens or a registration changes.

One process is the default. With ``PROMETHEUS_MULTIPROC_DIR`` set in the environment before voxgate starts
(for ``--workers N``), counters and histograms go to files in that directory and a scrape of any worker
sums every worker's (prometheus-client's multiprocess mode); the scrape-time state of each worker is copied
into that directory every :data:`PUBLISH_S` seconds by :func:`publish_forever` (``livesum`` gauges: the
sum over the live workers; ``livemax`` for the data directory and maintenance mode), with the CPU and
memory of each worker's process. See docs/monitoring.md.

No web framework here: ``voxgate.api`` serves :func:`render` and counts HTTP requests with
:func:`http_request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from voxgate import __version__
from voxgate.errors import NotRunning
from voxgate.store import events
from voxgate.streams.session import StreamType

if TYPE_CHECKING:
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine

    from voxgate.service.runtime import Runtime
    from voxgate.streams.session import StreamSession

MULTIPROCESS: Final = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
PUBLISH_S: Final = 5.0  # multi-process mode: how often a worker copies its scrape-time state to the files

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter and histogram

# voxgate's own metrics, and (one process) the process, platform and garbage-collector collectors
REGISTRY = CollectorRegistry()
if not MULTIPROCESS:  # in multi-process mode a scrape reads the files instead (see publish)
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)

# -- events, counted where they happen -------------------------------------------------------------------

SPEECH_ANALYSED = Counter(
    "voxgate_speech_analysed_seconds",
    "Net speech run through the speaker models, seconds: `stream` by the inference engine (live streams), "
    "`recording` by enrollments from recordings.",
    ["source"],
    registry=REGISTRY,
)
ENGINE_CYCLE = Histogram(
    "voxgate_engine_cycle_seconds",
    "Wall time of one inference-engine cycle (VAD for every stream with audio, then the chunks it "
    "completed); the sum's rate is the share of time the engine is busy.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
INFERENCE = Counter(
    "voxgate_inference_seconds",
    "Time the inference engine spent in each model (`vad` and the speaker models), seconds.",
    ["model"],
    registry=REGISTRY,
)
ENROLLMENTS = Counter(
    "voxgate_enrollments",
    "Enrollment answers by source (`stream`: POST /api/v2/enroll and the enroll webhook; `recordings`: "
    "import and `voxgate enroll`; `bot`: a voice bot's enroll operation) and result (created, not_enough_speech, "
    "exists; recordings and bot: failed).",
    ["source", "result"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "voxgate_verifications",
    "Verification answers by result: verified, not_sure, not_verified, not_enough_speech, "
    "voiceprint_not_found (POST /api/v2/verify and the verify webhook).",
    ["result"],
    registry=REGISTRY,
)
VERIFY_LATENCY = Histogram(
    "voxgate_verify_latency_seconds",
    "POST /api/v2/verify from the start of its handler to the answer, seconds.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "voxgate_http_requests",
    "HTTP requests by method, route template (not the raw path; `unmatched` for no route) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "voxgate_http_request_duration_seconds",
    "HTTP requests from the first byte in to the last byte out, by method and route template, seconds "
    "(a stream data request lasts as long as its upload).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "voxgate_webhook_deliveries",
    "Webhook callbacks by subscription type (streams, enroll, verify) and outcome: delivered (2xx), "
    "retried (an attempt to try again), failed (for good), dropped (left a full queue).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
SIP_CALLS = Counter(
    "voxgate_sip_calls",
    "Incoming SIP calls by PBX instance and the final status voxgate answered (200 answered; 486 busy, "
    "488 no common codec, 503 maintenance or no models, ...).",
    ["pbx", "status"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "voxgate_store_errors",
    "Database errors raised by the store's driver, by class (IntegrityError is also a lost race that the "
    "store handles; OperationalError: the database is locked, full, or unreachable).",
    ["error"],
    registry=REGISTRY,
)

OUTCOMES_DELIVERED: Final = "delivered"
OUTCOMES_RETRIED: Final = "retried"
OUTCOMES_FAILED: Final = "failed"
OUTCOMES_DROPPED: Final = "dropped"

_STREAM_SPEECH = SPEECH_ANALYSED.labels("stream")
_RECORDING_SPEECH = SPEECH_ANALYSED.labels("recording")


def verified(result: str) -> None:
    """One verification answer (the hot path: one increment)."""
    VERIFICATIONS.labels(result).inc()


def verify_latency(seconds: float) -> None:
    VERIFY_LATENCY.observe(seconds)


def enrolled(source: str, result: str) -> None:
    ENROLLMENTS.labels(source, result).inc()


def recording_speech(seconds: float) -> None:
    _RECORDING_SPEECH.inc(seconds)


def webhook(kind: str, outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(kind, outcome).inc()


def sip_call(pbx: str, status: int) -> None:
    """A SIP agent's ``on_call`` (:class:`voxgate.telephony.agent.AgentOptions`): one call's final answer."""
    SIP_CALLS.labels(pbx, str(status)).inc()


_HTTP: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # the label children of each (method, route, status)
_HTTP_CHILDREN_MAX = 4096  # routes are templates and methods a short list: this is never reached


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request (the API middleware's call): two cached children, an increment and an observation."""
    key = (method, route, status)
    children = _HTTP.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route))
        if len(_HTTP) < _HTTP_CHILDREN_MAX:
            _HTTP[key] = children
    children[0].inc()
    children[1].observe(seconds)


class EngineMeter:
    """What the inference engine reports as it works (:class:`voxgate.streams.inference.EngineMeter`)."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def cycle(self, seconds: float) -> None:
        ENGINE_CYCLE.observe(seconds)

    def inference(self, model_id: str, seconds: float) -> None:
        child = self._models.get(model_id)
        if child is None:
            child = self._models[model_id] = INFERENCE.labels(model_id)
        child.inc(seconds)

    def speech(self, seconds: float) -> None:
        _STREAM_SPEECH.inc(seconds)


ENGINE_METER: Final = EngineMeter()


def watch_store(engine: AsyncEngine) -> None:
    """Count the errors the database driver raises on this engine (a SQLAlchemy ``handle_error`` hook)."""
    from sqlalchemy import event

    if not event.contains(engine.sync_engine, "handle_error", _store_error):
        event.listen(engine.sync_engine, "handle_error", _store_error)


def _store_error(context: ExceptionContext) -> None:
    error = context.sqlalchemy_exception or context.original_exception
    STORE_ERRORS.labels(type(error).__name__).inc()


# -- state, read at scrape time ----------------------------------------------------------------------------

STREAM_STATES: Final = ("collecting", "ready", "capped")


def stream_state(session: StreamSession, ready_s: float) -> str:
    """``capped``: the voiceprint is full (later audio is not analysed); ``ready``: it holds the net speech
    a verification needs; ``collecting``: not yet."""
    if session.capped:
        return "capped"
    return "ready" if session.speech_s >= ready_s else "collecting"


class RuntimeCollector:
    """The runtime's state as gauges, computed when Prometheus scrapes (nothing kept in between)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Metric]:
        return [family for family, _ in self._families()]

    def collect(self) -> Iterator[Metric]:
        for family, fill in self._families():
            fill(family)
            yield family

    def _families(self) -> list[tuple[GaugeMetricFamily, Callable[[GaugeMetricFamily], None]]]:
        return [
            (GaugeMetricFamily("voxgate_build_info", "voxgate's version (always 1).", labels=["version"]),
             self._build),
            (GaugeMetricFamily("voxgate_streams", "Live streams by type (HTTP, WebSocket, SIP) and state "
             "(collecting, ready, capped).", labels=["type", "state"]), self._streams),
            (GaugeMetricFamily("voxgate_streams_limit", "The most live streams at once (VOXGATE_MAX_STREAMS)."),
             self._limit),
            (GaugeMetricFamily("voxgate_engine_running", "Whether the inference engine runs (0: models not "
             "loaded, or starting or stopping)."), self._engine_running),
            (GaugeMetricFamily("voxgate_engine_backlog_seconds", "Audio of all streams waiting for the "
             "inference engine, seconds: near 0 while it keeps up; growing means overload."), self._backlog),
            (GaugeMetricFamily("voxgate_sip_registrations", "SIP registration of each started PBX instance: 1 "
             "for its state (registering, registered, failed, stopped), 0 for the others.",
             labels=["pbx", "state"]), self._registrations),
            (GaugeMetricFamily("voxgate_events_queued", "Events waiting to be written to the event log (the "
             "verify events are written behind, in groups)."), self._events),
            (GaugeMetricFamily("voxgate_data_dir_free_bytes", "Free bytes, for voxgate's user, on the "
             "filesystem of the data directory."), self._free),
            (GaugeMetricFamily("voxgate_data_dir_size_bytes", "Size of the filesystem of the data directory, "
             "bytes."), self._size),
            (GaugeMetricFamily("voxgate_maintenance", "Maintenance mode (1: new streams, enroll, verify and "
             "import answer 423)."), self._maintenance),
        ]  # fmt: skip

    # each fills its family; a part that is not running reports nothing (or 0)

    def _build(self, family: GaugeMetricFamily) -> None:
        family.add_metric([__version__], 1)

    def _streams(self, family: GaugeMetricFamily) -> None:
        counts = {(t.value, s): 0 for t in StreamType for s in STREAM_STATES}
        registry = self.runtime.registry
        if registry is not None:
            ready_s = self.runtime.settings.min_verify_speech_s
            for session in registry.all():
                key = (session.type.value, stream_state(session, ready_s))
                counts[key] = counts.get(key, 0) + 1
        for (kind, state), count in counts.items():
            family.add_metric([kind, state], count)

    def _limit(self, family: GaugeMetricFamily) -> None:
        family.add_metric([], self.runtime.settings.max_streams)

    def _engine_running(self, family: GaugeMetricFamily) -> None:
        engine = self.runtime.engine
        family.add_metric([], 1 if engine is not None and engine.running else 0)

    def _backlog(self, family: GaugeMetricFamily) -> None:
        engine = self.runtime.engine
        family.add_metric([], engine.backlog_s if engine is not None else 0.0)

    def _registrations(self, family: GaugeMetricFamily) -> None:
        instances = self.runtime.pbx_instances
        if instances is None:
            return
        for pbx_id, agent in list(instances.agents.items()):
            current = agent.registration.state
            for state in REGISTRATION_STATES:
                family.add_metric([pbx_id, state], 1 if state == current else 0)

    def _events(self, family: GaugeMetricFamily) -> None:
        try:
            sessions = self.runtime.store.sessions
        except NotRunning:
            family.add_metric([], 0)
        else:
            family.add_metric([], events.queued(sessions))

    def _free(self, family: GaugeMetricFamily) -> None:
        with contextlib.suppress(OSError):
            family.add_metric([], shutil.disk_usage(self.runtime.settings.data_dir).free)

    def _size(self, family: GaugeMetricFamily) -> None:
        with contextlib.suppress(OSError):
            family.add_metric([], shutil.disk_usage(self.runtime.settings.data_dir).total)

    def _maintenance(self, family: GaugeMetricFamily) -> None:
        family.add_metric([], 1 if self.runtime.locked else 0)


REGISTRATION_STATES: Final = ("registering", "registered", "failed", "stopped")


# -- the scrape ------------------------------------------------------------------------------------------


class _Scrape:
    """What one scrape collects (a prometheus-client ``Collector``)."""

    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        if MULTIPROCESS:  # every worker's counters, histograms and published state, from the files
            yield from multiprocess.MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
            return
        yield from REGISTRY.collect()
        if self.runtime is not None:
            yield from RuntimeCollector(self.runtime).collect()


def render(runtime: Runtime | None) -> bytes:
    """The Prometheus text format (``CONTENT_TYPE``) of this process, or of every worker's."""
    return generate_latest(_Scrape(runtime))


# -- multi-process mode: each worker publishes its state ---------------------------------------------------

Mode = Literal["livesum", "livemax", "livemin"]
# how the workers' values of a published family combine: the sum over live workers, unless it is the
# same value seen by each (the data directory, the limit, maintenance mode)
_PUBLISH_MODES: Final[dict[str, Mode]] = {
    "voxgate_build_info": "livemax",
    "voxgate_streams_limit": "livemax",
    "voxgate_data_dir_free_bytes": "livemin",
    "voxgate_data_dir_size_bytes": "livemax",
    "voxgate_maintenance": "livemax",
}
# of the process collector, summed over the workers
_PROCESS_SAMPLES: Final = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
)
_published: dict[str, Gauge] = {}
_last_labels: dict[str, set[tuple[str, ...]]] = {}


def publish(runtime: Runtime) -> None:
    """Multi-process mode: copy this worker's scrape-time state (and its process's CPU and memory) into the
    shared directory. A label set that disappeared (a stopped PBX instance) is set to 0."""
    families = [*RuntimeCollector(runtime).collect(), *ProcessCollector(registry=None).collect()]
    now: dict[str, set[tuple[str, ...]]] = {}
    for family in families:
        for sample in family.samples:
            if family.name.startswith("process_") and sample.name not in _PROCESS_SAMPLES:
                continue
            gauge = _published.get(sample.name)
            if gauge is None:
                gauge = _published[sample.name] = Gauge(
                    sample.name,
                    family.documentation,
                    list(sample.labels),
                    registry=None,
                    multiprocess_mode=_PUBLISH_MODES.get(family.name, "livesum"),
                )
            values = tuple(sample.labels.values())
            (gauge.labels(*values) if values else gauge).set(sample.value)
            now.setdefault(sample.name, set()).add(values)
    for name, gone in _last_labels.items():
        for values in gone - now.get(name, set()):
            _published[name].labels(*values).set(0)
            now.setdefault(name, set()).add(values)  # stays 0 from now on
    _last_labels.update(now)


async def publish_forever(runtime: Runtime) -> None:
    """Multi-process mode: :func:`publish` every :data:`PUBLISH_S` seconds, until cancelled."""
    try:
        while True:
            publish(runtime)
            await asyncio.sleep(PUBLISH_S)
    finally:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # this worker's live gauges leave the sums
