"""What a running voxgate holds, started and stopped in one fixed order.

The FastAPI app uses :meth:`Runtime.start`/:meth:`Runtime.stop` as its lifespan; the CLI and the benches
build one too. Nothing here knows HTTP: a door asks the runtime for its parts, and a part that is not
running (the server is starting or stopping, or the models are not prepared) raises a domain error that
each door translates in its own way.

Start order (stop is the reverse)::

    data directory (owner-only) ─► store ─► secrets key (checked; plain or old-key secrets re-encrypted)
      ─► maintenance flag, shipped profiles, account ─► event purge ─► biometrics (models)
      ─► inference engine + stream registry ─► shared live state (signals, heartbeat; voxgate.service.cluster)
      ─► PBX instances (their calls are streams)
      ─► webhooks (listen to stream starts and stops)
      ─► metrics publisher (only in multi-process mode, see voxgate.service.metrics)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from voxgate.biometrics.engine import Biometrics
from voxgate.errors import ModelError, ModelNotPrepared, NotRunning, ProfileError
from voxgate.service import accounts, housekeeping, keys, metrics, models, telephony
from voxgate.service.bots import BotSessions, load_sets
from voxgate.service.cluster import Cluster
from voxgate.service.folding import FoldedEvents
from voxgate.service.shared import LocalState, SharedState, Throttle
from voxgate.service.throttle import LoginThrottle
from voxgate.service.webhooks import Webhooks, WebhookSender
from voxgate.settings import Settings
from voxgate.store import cache, events, files, profiles, settings_kv
from voxgate.store import pbx as pbx_store
from voxgate.store.db import Store
from voxgate.streams import StreamRegistry, StreamSession
from voxgate.streams.inference import InferenceEngine
from voxgate.telephony.agent import AgentOptions
from voxgate.telephony.instances import PbxInstances

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

WEBHOOK_DRAIN_S = 5.0  # at most this long for queued callbacks to go out at shutdown
class Runtime:
    """Settings, store, biometrics, inference engine, stream registry, PBX agents, webhooks and the
    maintenance flag of one process. Build it with settings; :meth:`start` brings the parts up."""

    def __init__(self, settings: Settings, *, telephony: bool = True) -> None:
        """``telephony=False``: the stored PBX instances are not started (another worker of this box runs
        the SIP agents: their ports are the box's)."""
        self.settings = settings
        self.telephony = telephony
        self.locked = False  # maintenance mode (persisted as the `maintenance` setting)
        self.throttle = LoginThrottle()  # this process's counts (used unless the shared state counts them)
        self.shared = self._shared_state(settings)
        self.cluster: Cluster | None = None  # heartbeat, signals, stream entries (started with the registry)
        self.refusals: FoldedEvents | None = None  # the `error` events of refused requests, folded
        self.biometrics: Biometrics | None = None  # None: models not prepared (biometric calls get 503)
        self.registry: StreamRegistry | None = None
        self.pbx_instances: PbxInstances | None = None
        self.webhooks: Webhooks | None = None
        self.bots: BotSessions | None = None  # the voice-bot operations (voxgate.service.bots)
        self._store: Store | None = None
        self.purge_task: asyncio.Task[None] | None = None
        self.metrics_task: asyncio.Task[None] | None = None  # multi-process mode only

    # -- the parts, for the doors ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotRunning("the store is not open (the server is starting or stopping)")
        return self._store

    @property
    def running(self) -> bool:
        return self.registry is not None

    @property
    def streams(self) -> StreamRegistry:
        if self.registry is None:
            raise NotRunning("streams are not running (the server is starting or stopping)")
        return self.registry

    @property
    def engine(self) -> InferenceEngine | None:
        return None if self.registry is None else self.registry.engine

    @property
    def pbx(self) -> PbxInstances:
        if self.pbx_instances is None:
            raise NotRunning("telephony is not running (the server is starting or stopping)")
        return self.pbx_instances

    @property
    def node_id(self) -> str:
        return self.shared.node_id

    @property
    def login_throttle(self) -> Throttle:
        """Failed-login counts: this process's, or the cluster's (Redis)."""
        return self.shared.throttle(self.throttle)

    @staticmethod
    def _shared_state(settings: Settings) -> SharedState:
        if not settings.redis_url:
            return LocalState(settings.node_id)
        from voxgate.service.shared_redis import RedisState  # the redis client only where it is used

        return RedisState(settings.node_id, settings.redis_url)

    def require_biometrics(self) -> Biometrics:
        if self.biometrics is None:
            raise ModelNotPrepared("the biometric models are not loaded: run `voxgate models prepare`")
        return self.biometrics

    async def run_offline(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Blocking work on recordings (decode, VAD, embed): on the inference engine's offline worker (one
        job at a time, lower OS priority), so a burst of imports cannot starve live calls. Without an engine
        (the CLI's offline commands) there are no live calls to protect: a plain worker thread."""
        engine = self.engine
        if engine is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return await engine.offline.run(fn, *args, **kwargs)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, *, live: bool = True) -> None:
        """Bring every part up in order; on a failure, what was started is stopped again.

        ``live=False`` (the CLI's offline commands) opens only the store and the biometrics: no account,
        purge, streams, PBX agents or webhooks, so a command never binds a port or sends a callback."""
        try:
            await self._start(live)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, live: bool) -> None:
        settings = self.settings
        cache.configure(settings.cache_ttl_s)
        files.private_dir(settings.data_dir)
        files.private_file(accounts.reset_secret_path(settings))
        self._store = store = await Store(settings.resolved_database_url).open()
        metrics.watch_store(store.engine)
        sessions = store.sessions
        store.use_keyring(await keys.unlock(sessions, settings))  # SecretKeyError: refuse to start
        self.refusals = FoldedEvents(sessions, events.ERROR)

        self.locked = bool(await settings_kv.get(sessions, settings_kv.MAINTENANCE, False))
        added = await profiles.ensure_shipped(sessions)
        if added:
            log.info("stored %d shipped calibration profiles", added)
        if live and self.locked:
            log.warning("starting in maintenance mode: unlock with GET /api/v2/maintenance/unlock")
        if live:
            await accounts.ensure_account(sessions, settings)
            accounts.rotate_reset_secret(settings)
            self.purge_task = asyncio.create_task(
                housekeeping.purge_forever(
                    sessions, settings.event_retention_days, claim=lambda ttl_s: self.shared.lease("purge", ttl_s)
                ),
                name="voxgate-purge",
            )

        try:
            self.biometrics = await asyncio.to_thread(models.load_biometrics, settings)
        except (ModelError, ProfileError) as exc:  # the server still starts: auth, backups, ... work
            if not live:
                raise
            log.error("biometrics unavailable: %s", exc)
        else:
            log.info("biometrics loaded", extra={"models": list(self.biometrics.models)})
        if not live:
            return

        engine = None
        if self.biometrics is not None:
            engine = InferenceEngine(
                self.biometrics,
                max_backlog_s=settings.stream_max_backlog_s,
                meter=metrics.ENGINE_METER,
                offline_nice=settings.offline_nice,
            )
            engine.start()
        registry = StreamRegistry(
            self.biometrics,
            on_start=self._stream_started,
            on_stop=self._stream_stopped,
            max_streams=settings.max_streams,
            idle_timeout_s=settings.stream_idle_timeout_s,
            first_audio_timeout_s=settings.stream_first_audio_timeout_s,
            chunk_s=settings.stream_chunk_s,
            max_speech_s=settings.stream_max_speech_s,
            engine=engine,
        )
        registry.start()
        self.registry = registry
        self.bots = BotSessions(self, load_sets(settings))
        registry.listen(on_stop=self.bots.stream_stopped)

        cluster = Cluster(self, self.shared, ttl_s=settings.node_ttl_s)
        if self.shared.distributed:
            await self._shared_lock(self.shared)
        await cluster.start()  # RedisError, OSError: refuse to start rather than run as a lonely node
        self.cluster = cluster
        registry.listen(on_start=cluster.stream_started, on_stop=cluster.stream_stopped)

        self.pbx_instances = PbxInstances(
            registry,
            AgentOptions(rtp_timeout_s=settings.rtp_timeout_s, on_call=metrics.sip_call),
            admit=lambda: not self.locked,
        )
        if self.telephony:
            await telephony.start_stored(self.pbx_instances, await pbx_store.list_all(sessions), settings)

        self.webhooks = Webhooks(
            self, WebhookSender.from_settings(sessions, settings), interval_s=settings.webhook_interval_s
        )
        self.webhooks.attach(registry)
        self.webhooks.start()

        if metrics.MULTIPROCESS:
            self.metrics_task = asyncio.create_task(metrics.publish_forever(self), name="voxgate-metrics")

    async def stop(self) -> None:
        """Stop every part that runs, in reverse order; safe to call twice."""
        publisher, self.metrics_task = self.metrics_task, None
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        webhooks, self.webhooks = self.webhooks, None
        if webhooks is not None:
            await webhooks.stop(drain_s=min(WEBHOOK_DRAIN_S, self.settings.webhook_timeout_s))
        bots, self.bots = self.bots, None
        if bots is not None:
            await bots.stop()  # each running operation tells its bot, while the streams still live
        instances, self.pbx_instances = self.pbx_instances, None
        if instances is not None:
            await instances.stop_all()  # hang up every call before the registry stops
        registry, self.registry = self.registry, None
        if registry is not None:
            await registry.stop()
            await registry.close_all("shutdown")
            if registry.engine is not None:
                await asyncio.to_thread(registry.engine.stop)
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.stop()
        self.biometrics = None  # the engine is shared per process (models.load_biometrics)
        purge, self.purge_task = self.purge_task, None
        if purge is not None:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
        refusals, self.refusals = self.refusals, None
        if refusals is not None:
            await refusals.stop()
        store, self._store = self._store, None
        if store is not None:
            await events.flush(store.sessions)
            await store.close()

    async def _shared_lock(self, shared: SharedState) -> None:
        """A cluster's maintenance flag: the store's seeds a fresh Redis; the shared one then counts."""
        await shared.seed_locked(self.locked)
        locked = await shared.locked()
        if locked is not None:
            self.locked = locked

    # -- stream events ----------------------------------------------------------------------------------

    async def _stream_started(self, session: StreamSession) -> None:
        await events.record(
            self.store.sessions,
            events.STREAM_START,
            events.OK,
            stream_uuid=session.uuid,
            stream_type=session.type.value,
            sample_rate_hz=session.sample_rate_hz,
            info=session.info,
        )

    async def _stream_stopped(self, session: StreamSession, reason: str) -> None:
        await events.record(
            self.store.sessions,
            events.STREAM_STOP,
            reason,
            stream_uuid=session.uuid,
            duration_s=round(time.monotonic() - session.started_monotonic, 3),
            stream_type=session.type.value,
            sample_rate_hz=session.sample_rate_hz,
            info=session.info,
            audio_s=round(session.duration_s, 3),
            speech_s=round(session.speech_s, 3),
            dropped_s=round(session.dropped_s, 3),
        )
