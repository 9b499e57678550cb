"""Webhook callbacks (Voice Verify's WebHooks): signed, queued, retried, never in the way of audio.

What produces callbacks (subscriptions: :mod:`voxgate.store.subscriptions`):

- ``streams``: the stream registry's start/stop listeners, for HTTP and WebSocket streams whose
  ``info.source_uuid`` is a subscribed channel (``action`` ``added``, status 201; ``removed``, status 200);
- ``enroll`` / ``verify``: ONE ticker task per process, every ``VOXGATE_WEBHOOK_INTERVAL_S`` (1 s), runs
  each subscription of a live stream of this process through the same code as ``POST /api/v2/enroll`` and
  ``/verify`` (:mod:`voxgate.service.enrollment`, :mod:`voxgate.service.verification`). A subscription whose previous callback is still on its
  way (queued, in flight or waiting to retry) skips the tick: a slow receiver gets fewer, fresh callbacks
  rather than a backlog. An enroll subscription ends with its first final answer (201 created, 409 exists):
  that callback is sent and the subscription deleted. Enroll and verify subscriptions of a stream are
  deleted when the stream closes.

How they are delivered: producers only put callbacks into one bounded asyncio queue and never wait for
delivery. ``VOXGATE_WEBHOOK_WORKERS`` tasks send them with one ``httpx.AsyncClient``. Each attempt has a
deadline (``VOXGATE_WEBHOOK_TIMEOUT_S``); a network error, a timeout, 5xx or 429 is retried up to
``VOXGATE_WEBHOOK_RETRIES`` times, ``VOXGATE_WEBHOOK_BACKOFF_S`` × 2^k seconds later (at most 60 s, or the
receiver's ``Retry-After`` if longer); a waiting retry holds no worker. Any other status (3xx, 4xx) is final.
A callback that fails for good is a ``webhook`` event with outcome ``failed`` (url, status or error,
attempts). A full queue drops its OLDEST callback (the newest state is worth more) and records a ``webhook``
event with outcome ``dropped`` (one per subscription and second, with the count). Successes are counted in
memory (``GET /api/v2/subscription``), not logged: that would be an event per second per subscription.

Every callback is signed: ``X-Voxgate-Timestamp`` (Unix seconds) and ``X-Voxgate-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` keyed with the subscription's secret (see
:func:`verify_signature`). ``X-Voxgate-Delivery`` is the same for every attempt of one callback, so a
receiver can drop a repeat; ``X-Voxgate-Subscription`` names the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import uuid as uuid_module
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from voxgate import __version__
from voxgate.errors import VoxgateError
from voxgate.service.enrollment import (
    CREATED,
    EXISTS,
    EnrollOutcome,
    EnrollResult,
    enroll_stream,
    record_enroll,
)
from voxgate.service.verification import VerifyOutcome, VerifyResult, record_verify, verify_stream
from voxgate.settings import Settings
from voxgate.store import events, subscriptions
from voxgate.store.db import DbSessions
from voxgate.store.subscriptions import Subscription
from voxgate.streams import StreamNotFound, StreamSession, StreamType
from voxgate.streams.registry import StreamRegistry

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voxgate-Signature"
TIMESTAMP_HEADER = "X-Voxgate-Timestamp"
DELIVERY_HEADER = "X-Voxgate-Delivery"
SUBSCRIPTION_HEADER = "X-Voxgate-Subscription"
ATTEMPT_HEADER = "X-Voxgate-Attempt"
SIGNATURE_TOLERANCE_S = 300  # how old a timestamp verify_signature accepts by default
MAX_BACKOFF_S = 60.0
DROP_REPORT_S = 1.0  # dropped callbacks are summed into one event per subscription per this period
ANNOUNCED_TYPES = (StreamType.HTTP, StreamType.WEBSOCKET)  # SIP calls carry no source_uuid
VIA = "webhook"  # detail of the enroll/verify events a subscription records


# -- signatures ----------------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with the subscription's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent (no replays)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# -- URLs ----------------------------------------------------------------------------------------------


def check_url(url: str) -> str:
    """The webhook URL if it is an absolute http(s) URL with a host; ValueError naming the problem."""
    if len(url) > subscriptions.MAX_URL:
        raise ValueError(f"the webhook URL is {len(url)} characters long; at most {subscriptions.MAX_URL}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError("the webhook URL must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"the webhook URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        raise ValueError(f"the webhook URL must start with http:// or https:// (scheme {shown})")
    if not host:
        raise ValueError("the webhook URL names no host")
    if port == 0:
        raise ValueError("the webhook URL has port 0")
    try:
        httpx.URL(url)
    except Exception as exc:  # what the client would refuse at send time (InvalidURL, IDNA errors...)
        raise ValueError(f"the webhook URL is malformed: {exc}") from None
    return url


def redact(url: str) -> str:
    """The URL without a password in it (for logs and events)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# -- payloads (exactly Voice Verify's) -----------------------------------------------------------------

# The callback's `status` for each outcome: the reference's codes, part of the payload format (they match
# the HTTP answers of /enroll and /verify, which voxgate.api decides on its own).
ENROLL_STATUS: dict[EnrollResult, int] = {CREATED: 201, "not_enough_speech": 200, EXISTS: 409}
VERIFY_STATUS: dict[VerifyResult, int] = {
    "verified": 200,
    "not_sure": 200,
    "not_verified": 200,
    "not_enough_speech": 200,
    "voiceprint_not_found": 404,
}


def stream_payload(channel_uuid: str, action: str, stream_uuid: str, status: int) -> dict[str, Any]:
    return {
        "channel_uuid": channel_uuid,
        "type": "stream",
        "status": status,
        "payload": {"action": action, "stream_uuid": stream_uuid},
    }


def enroll_payload(channel_uuid: str, outcome: EnrollOutcome) -> dict[str, Any]:
    return {
        "channel_uuid": channel_uuid,
        "type": "enroll",
        "payload": {
            "stream_uuid": outcome.stream_uuid,
            "external_id": outcome.external_id,
            "detail": outcome.detail,
            "speech_length": round(outcome.speech_s, 3),
        },
        "status": ENROLL_STATUS[outcome.result],
    }


def verify_payload(channel_uuid: str, outcome: VerifyOutcome) -> dict[str, Any]:
    return {
        "channel_uuid": channel_uuid,
        "type": "verify",
        "status": VERIFY_STATUS[outcome.result],
        "payload": {
            "stream_uuid": outcome.stream_uuid,
            "external_id": outcome.external_id,
            "result": outcome.detail,
            "speech_length": round(outcome.speech_s, 3),
            "score": None if outcome.score is None else round(outcome.score, 4),
        },
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body as sent and signed: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# -- delivery ------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One callback, through all its attempts."""

    subscription: str
    kind: str  # the subscription's type
    url: str
    secret: str = field(repr=False)
    body: bytes = field(repr=False)
    stream_uuid: str | None = None
    external_id: str | None = None
    id: str = field(default_factory=lambda: uuid_module.uuid4().hex)
    attempts: int = 0

    @classmethod
    def of(cls, subscription: Subscription, payload: Mapping[str, Any], stream_uuid: str) -> Delivery:
        return cls(
            subscription.uuid,
            subscription.type,
            subscription.url,
            subscription.secret,
            encode(payload),
            stream_uuid,
            subscription.external_id,
        )


@dataclass
class DeliveryStats:
    """Deliveries of one subscription since this process started."""

    kind: str
    delivered: int = 0
    failed: int = 0  # after all retries
    dropped: int = 0  # left a full queue
    retries: int = 0
    last_status: int | None = None
    last_error: str | None = None
    last_attempt: datetime | None = None


class WebhookSender:
    """The bounded queue, its workers and the HTTP client. Single event loop."""

    def __init__(
        self,
        sessions: DbSessions,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        queue_size: int = 1000,
        workers: int = 8,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or queue_size < 1 or workers < 1:
            raise ValueError("timeout_s > 0, retries >= 0, backoff_s >= 0, queue_size >= 1, workers >= 1")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.workers = workers
        self._sessions = sessions
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self._client: httpx.AsyncClient | None = None
        self._accepting = False
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[None]] = set()  # retries waiting for their backoff
        self._pending: Counter[str] = Counter()  # per subscription: queued, in flight or waiting
        self._stats: dict[str, DeliveryStats] = {}
        self._drops: dict[str, tuple[Delivery, int]] = {}  # not yet reported, per subscription
        self._drop_report: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, sessions: DbSessions, settings: Settings) -> WebhookSender:
        return cls(
            sessions,
            timeout_s=settings.webhook_timeout_s,
            retries=settings.webhook_retries,
            backoff_s=settings.webhook_backoff_s,
            queue_size=settings.webhook_queue_size,
            workers=settings.webhook_workers,
        )

    @property
    def running(self) -> bool:
        """Started and not stopping: callbacks are accepted."""
        return self._accepting

    def start(self) -> None:
        if self._client is not None:
            return
        self._accepting = True
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            follow_redirects=False,
            headers={"User-Agent": f"voxgate/{__version__}"},
            limits=httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers),
        )
        self._tasks = [
            asyncio.get_running_loop().create_task(self._work(), name=f"webhook-worker-{i}")
            for i in range(self.workers)
        ]

    async def stop(self, drain_s: float = 0.0) -> None:
        """Give queued callbacks up to ``drain_s`` to go out, then stop (what is left is not sent)."""
        self._accepting = False  # refuse new callbacks from here on
        if self._client is None:
            return
        if drain_s > 0 and self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
        tasks = [*self._tasks, *self._waiting]
        if self._drop_report is not None:
            tasks.append(self._drop_report)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._waiting, self._drop_report = [], set(), None
        await self._report_drops()
        left = self._queue.qsize()
        if left:
            log.warning("webhooks stopped with callbacks unsent", extra={"unsent": left})
        client, self._client = self._client, None
        await client.aclose()

    # -- what producers call (never blocks) -------------------------------------------------------------

    def submit(self, delivery: Delivery) -> bool:
        """Queue a callback; False when stopped. A full queue drops its oldest callback for this one."""
        if not self._accepting:
            return False
        self._pending[delivery.subscription] += 1
        self._stats_for(delivery)
        self._enqueue(delivery)
        return True

    def busy(self, subscription: str) -> bool:
        """Whether a callback of this subscription is queued, in flight or waiting to be retried."""
        return self._pending[subscription] > 0

    def stats(self, subscription: str) -> DeliveryStats | None:
        """The counters of one subscription (None before its first callback in this process)."""
        return self._stats.get(subscription)

    def forget(self, subscription: str) -> None:
        """Drop the counters of a deleted subscription (callbacks still on their way are still sent)."""
        if not self.busy(subscription):
            self._stats.pop(subscription, None)

    def prune(self, kinds: Collection[str], keep: Collection[str]) -> None:
        """Forget the counters of subscriptions of ``kinds`` that are gone and have nothing pending."""
        for name in [n for n, s in self._stats.items() if s.kind in kinds and n not in keep]:
            if not self.busy(name):
                del self._stats[name]
                self._pending.pop(name, None)

    # -- internals -------------------------------------------------------------------------------------

    def _stats_for(self, delivery: Delivery) -> DeliveryStats:
        if delivery.subscription not in self._stats:
            self._stats[delivery.subscription] = DeliveryStats(delivery.kind)
        return self._stats[delivery.subscription]

    def _enqueue(self, delivery: Delivery) -> None:
        if self._queue.full():
            oldest = self._queue.get_nowait()
            self._queue.task_done()
            self._dropped(oldest)
        self._queue.put_nowait(delivery)

    def _finished(self, delivery: Delivery) -> None:
        self._pending[delivery.subscription] -= 1
        if self._pending[delivery.subscription] <= 0:
            del self._pending[delivery.subscription]

    def _dropped(self, delivery: Delivery) -> None:
        self._finished(delivery)
        self._stats_for(delivery).dropped += 1
        _, count = self._drops.get(delivery.subscription, (delivery, 0))
        self._drops[delivery.subscription] = (delivery, count + 1)
        log.warning(
            "webhook queue full, oldest callback dropped",
            extra={"subscription": delivery.subscription, "url": redact(delivery.url)},
        )
        if self._drop_report is None or self._drop_report.done():
            self._drop_report = asyncio.get_running_loop().create_task(self._report_drops_later())

    async def _report_drops_later(self) -> None:
        await asyncio.sleep(DROP_REPORT_S)
        await self._report_drops()

    async def _report_drops(self) -> None:
        drops, self._drops = self._drops, {}
        for delivery, count in drops.values():
            await self._record(delivery, events.DROPPED, count=count)

    async def _record(self, delivery: Delivery, outcome: str, **detail: Any) -> None:
        try:
            await events.record(
                self._sessions,
                events.WEBHOOK,
                outcome,
                stream_uuid=delivery.stream_uuid,
                external_id=delivery.external_id,
                subscription=delivery.subscription,
                callback=delivery.kind,
                url=redact(delivery.url),
                delivery=delivery.id,
                **detail,
            )
        except Exception:  # an unwritable event log must not stop the workers
            log.exception("could not record a webhook event")

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._attempt(delivery)
            except Exception:  # a worker must survive anything
                log.exception("webhook delivery failed unexpectedly")
                self._finished(delivery)
            finally:
                self._queue.task_done()

    async def _attempt(self, delivery: Delivery) -> None:
        client = self._client
        if client is None:
            return
        delivery.attempts += 1
        stats = self._stats_for(delivery)
        stats.last_attempt = datetime.now(UTC)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(delivery.secret, timestamp, delivery.body),
            DELIVERY_HEADER: delivery.id,
            SUBSCRIPTION_HEADER: delivery.subscription,
            ATTEMPT_HEADER: str(delivery.attempts),
        }
        status: int | None = None
        error: str | None = None
        retry_after_s = 0.0
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                client.stream("POST", delivery.url, content=delivery.body, headers=headers) as response,
            ):
                status = response.status_code  # the body is never read: a receiver cannot flood us
                retry_after_s = _retry_after_s(response.headers.get("Retry-After"))
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {self.timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        stats.last_status, stats.last_error = status, error
        if status is not None and 200 <= status < 300:
            stats.delivered += 1
            self._finished(delivery)
            return
        retryable = status is None or status >= 500 or status == 429
        if retryable and delivery.attempts <= self.retries:
            stats.retries += 1
            delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (delivery.attempts - 1))
            self._retry_later(delivery, max(delay, retry_after_s))
            return
        stats.failed += 1
        self._finished(delivery)
        log.warning(
            "webhook failed",
            extra={
                "subscription": delivery.subscription,
                "url": redact(delivery.url),
                "status": status,
                "error": error,
                "attempts": delivery.attempts,
            },
        )
        await self._record(delivery, events.FAILED, status=status, error=error, attempts=delivery.attempts)

    def _retry_later(self, delivery: Delivery, delay_s: float) -> None:
        async def wait() -> None:
            await asyncio.sleep(delay_s)
            if self._client is not None:
                self._enqueue(delivery)

        task = asyncio.get_running_loop().create_task(wait(), name="webhook-retry")
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)


def _retry_after_s(value: str | None) -> float:
    """A receiver's ``Retry-After`` in seconds (the delta form only), at most MAX_BACKOFF_S."""
    if value is None or not value.strip().isdigit():
        return 0.0
    return min(float(value.strip()), MAX_BACKOFF_S)


# -- the producers -------------------------------------------------------------------------------------


class Webhooks:
    """Turns stream starts/stops and the periodic tick into callbacks for the stored subscriptions.

    Subscriptions are read from the store when needed (one query per tick and per announced stream
    start/stop), never cached: a restore, or another process sharing the database, is seen at once.
    """

    def __init__(self, runtime: Runtime, sender: WebhookSender, *, interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.runtime = runtime
        self.sender = sender
        self.interval_s = interval_s
        self._ticker: asyncio.Task[None] | None = None
        self._recorded: dict[str, str] = {}  # per subscription: the outcome last recorded as an event
        self._failing: dict[str, str] = {}  # per subscription: the last error logged

    @property
    def _sessions(self) -> DbSessions:
        return self.runtime.store.sessions

    def attach(self, registry: StreamRegistry) -> None:
        registry.listen(on_start=self.stream_started, on_stop=self.stream_stopped)

    def start(self) -> None:
        self.sender.start()
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="webhook-ticker")

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop ticking; tell ``streams`` subscribers that the streams still open are going away (the
        streams close after this, during shutdown); send what is queued for up to ``drain_s``."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        registry = self.runtime.registry
        if registry is not None and self.sender.running:
            for session in registry.all():
                try:
                    await self._announce(session, "removed", 200)
                except Exception:
                    log.exception("could not announce a stream's end")
        await self.sender.stop(drain_s)

    # -- streams ---------------------------------------------------------------------------------------

    async def stream_started(self, session: StreamSession) -> None:
        await self._announce(session, "added", 201)

    async def stream_stopped(self, session: StreamSession, reason: str) -> None:
        """Enroll and verify subscriptions end with their stream; ``streams`` subscribers hear of it."""
        gone = await subscriptions.remove(
            self._sessions, channel_uuid=session.uuid, types=subscriptions.STREAM_TYPES
        )
        for subscription in gone:
            self._forget(subscription.uuid)
        await self._announce(session, "removed", 200)

    async def _announce(self, session: StreamSession, action: str, status: int) -> int:
        source = session.info.get("source_uuid")
        if source is None or session.type not in ANNOUNCED_TYPES or not self.sender.running:
            return 0
        channel = str(source)
        found = await subscriptions.find(self._sessions, types=(subscriptions.STREAMS,), channel_uuid=channel)
        for subscription in found:
            payload = stream_payload(channel, action, session.uuid, status)
            self.sender.submit(Delivery.of(subscription, payload, session.uuid))
        return len(found)

    # -- enroll and verify -----------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.interval_s
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self.tick()
            except Exception:  # the ticker must survive a database hiccup
                log.exception("webhook tick failed")
            if due < loop.time():  # overran: carry on from now, without a burst of catch-up ticks
                due = loop.time()

    async def tick(self) -> int:
        """One round over the enroll and verify subscriptions of this process's live streams; the number
        of callbacks queued."""
        runtime = self.runtime
        registry = runtime.registry
        if registry is None or runtime.locked or not self.sender.running:
            return 0
        found = await subscriptions.find(self._sessions, types=subscriptions.STREAM_TYPES)
        sent = 0
        for subscription in found:
            try:
                stream = registry.get(subscription.channel_uuid)
            except StreamNotFound:  # ended, or a stream of another process sharing the database
                continue
            if self.sender.busy(subscription.uuid):
                continue
            try:
                sent += await self._report(subscription, stream)
            except Exception as exc:  # e.g. no calibration profile fits: logged once, tried next tick
                message = exc.message if isinstance(exc, VoxgateError) else repr(exc)
                if self._failing.get(subscription.uuid) != message:
                    self._failing[subscription.uuid] = message
                    log.error(
                        "webhook %s not evaluated: %s",
                        subscription.type,
                        message,
                        exc_info=not isinstance(exc, VoxgateError),
                        extra={"subscription": subscription.uuid, "stream_uuid": stream.uuid},
                    )
        live = {s.uuid for s in found}
        for name in [n for n in self._recorded if n not in live]:
            self._forget(name)
        self.sender.prune(subscriptions.STREAM_TYPES, live)
        return sent

    async def _report(self, subscription: Subscription, stream: StreamSession) -> int:
        """Evaluate one subscription, record its event if the outcome changed, queue its callback."""
        external_id = subscription.external_id or ""
        payload: dict[str, Any]
        if subscription.type == subscriptions.ENROLL:
            enrolled = await enroll_stream(self.runtime, stream, external_id, record=False)
            if self._changed(subscription.uuid, enrolled.result):
                await record_enroll(self._sessions, enrolled, via=VIA, subscription=subscription.uuid)
            payload = enroll_payload(subscription.channel_uuid, enrolled)
            if enrolled.final:  # created or exists: asking again changes nothing
                await subscriptions.remove(self._sessions, uuid=subscription.uuid)
                self._forget(subscription.uuid)
        else:
            verified = await verify_stream(self.runtime, stream, external_id, record=False)
            if self._changed(subscription.uuid, verified.result):
                record_verify(self._sessions, verified, via=VIA, subscription=subscription.uuid)
            payload = verify_payload(subscription.channel_uuid, verified)
        self._failing.pop(subscription.uuid, None)
        return int(self.sender.submit(Delivery.of(subscription, payload, stream.uuid)))

    def _changed(self, subscription: str, result: str) -> bool:
        """Events record a subscription's outcome when it changes, not every second."""
        if self._recorded.get(subscription) == result:
            return False
        self._recorded[subscription] = result
        return True

    def _forget(self, subscription: str) -> None:
        self._recorded.pop(subscription, None)
        self._failing.pop(subscription, None)
