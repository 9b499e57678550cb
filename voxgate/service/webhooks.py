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

Where callbacks may go (a token holder chooses the URL, the server sends the request from its own
network): only public addresses, unless an operator lists networks in ``VOXGATE_WEBHOOK_ALLOW_NETWORKS``.
Private, loopback, link-local (cloud metadata at 169.254.169.254), unspecified, multicast, reserved,
documentation and carrier-grade NAT addresses are denied, IPv4 and IPv6 alike (an IPv4-mapped or NAT64
address is judged by the IPv4 address in it). A URL with userinfo, or a numeric host that is not a
canonical dotted quad (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``: forms ``inet_aton`` reads as
addresses) is refused outright. At subscribe time :func:`check_target` refuses those shapes and a literal
address that is denied; at delivery time every address the host resolves to is checked and the request
goes to a checked address (the original ``Host`` header, and for https the name as SNI, so the
certificate is checked against the name): a DNS answer that changes between the check and the connection
cannot redirect it. A delivery refused so is final, never retried, and its ``webhook`` event says only
:data:`NOT_ALLOWED`: no address, port or connection detail that would let a token holder map the
internal network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
import uuid as uuid_module
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from voxgate import __version__
from voxgate.errors import VoxgateError
from voxgate.service import metrics
from voxgate.service.enrollment import (
    CREATED,
    EXISTS,
    EnrollOutcome,
    EnrollResult,
    enroll_stream,
    record_enroll,
)
from voxgate.service.verification import VerifyOutcome, VerifyResult, record_verify, verify_stream
from voxgate.settings import IpNetwork, Settings
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
    """The webhook URL if it is an absolute http(s) URL with a host; ValueError naming the problem. Where
    it may send callbacks is :func:`check_target`'s question."""
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
        _check_shape(url)
    except TargetNotAllowed:
        return url  # check_target refuses it, with the reason (400)
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


# -- targets: where callbacks may go -------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IpAddress]]]

NOT_ALLOWED = "target not allowed"  # all a delivery event says of a denied target
# Denied whatever Python's own tables say (they changed between 3.11 patch releases); anything
# ``ipaddress`` does not call global is denied too. IPv4-mapped and NAT64 addresses are judged by the IPv4
# address in them (:func:`judged_as`).
DENIED_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the server itself
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata services (169.254.169.254)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "198.51.100.0/24",
        "203.0.113.0/24",
        "192.88.99.0/24",  # 6to4 relays
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, IPv4-compatible
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo, ...)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: an IPv4 address inside
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local
        "ff00::/8",  # multicast
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: judged by the IPv4 address in it
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class TargetNotAllowed(VoxgateError):
    """A webhook URL whose target callbacks may not go to (its shape, or a denied address)."""


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: scheme, host as connected to (ASCII, IDNA-encoded, no brackets), port
    and, when the host is an IP literal, that address."""

    scheme: str
    host: str
    port: int
    address: IpAddress | None


def target_of(url: str) -> Target:
    """Parse a webhook URL as the HTTP client will; TargetNotAllowed for userinfo, backslashes and numeric
    hosts that are not canonical (what ``inet_aton`` would read as an address)."""
    _check_shape(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetNotAllowed(f"the webhook URL is malformed: {exc}") from None
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetNotAllowed("the webhook URL must start with http:// or https://")
    if parsed.userinfo:
        raise TargetNotAllowed("the webhook URL must not carry a user name or password")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise TargetNotAllowed("the webhook URL names no host")
    port = parsed.port or (443 if scheme == "https" else 80)
    if "%" in host:
        raise TargetNotAllowed(f"the webhook URL's host {host!r} is not a valid IPv6 address (a zone id)")
    if ":" in host:
        try:
            return Target(scheme, host, port, ipaddress.IPv6Address(host))
        except ValueError:
            raise TargetNotAllowed(f"the webhook URL's host {host!r} is not a valid IPv6 address") from None
    return Target(scheme, host, port, _ipv4_literal(host))


def _check_shape(url: str) -> None:
    """What is refused before a URL parser has its say (parsers disagree on these)."""
    if "\\" in url:
        raise TargetNotAllowed("the webhook URL must not contain a backslash")
    try:
        netloc = urllib.parse.urlsplit(url).netloc
    except ValueError as exc:
        raise TargetNotAllowed(f"the webhook URL is malformed: {exc}") from None
    if "@" in netloc:
        raise TargetNotAllowed(
            "the webhook URL must not carry a user name or password (user:password@host): authenticate "
            "callbacks by their signature"
        )
    if not netloc.startswith("["):
        _ipv4_literal(netloc.rsplit(":", 1)[0].lower())


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The address of a host written as a dotted quad; None for a name. A host whose last label is a
    number (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``, ``1.2.3.4.5``) is an address to
    ``inet_aton`` and to browsers, so it must be a canonical dotted quad (TargetNotAllowed otherwise)."""
    if not _NUMERIC_LABEL.fullmatch(host.removesuffix(".").rsplit(".", 1)[-1]):
        return None
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        address = None
    if address is None or str(address) != host:
        raise TargetNotAllowed(
            f"the webhook URL's host {host!r} is numeric but not a dotted quad: write an IPv4 address as "
            "four decimal numbers (e.g. 203.0.113.7), without leading zeros"
        )
    return address


def judged_as(address: IpAddress) -> IpAddress:
    """The address a check looks at: the IPv4 address inside an IPv4-mapped or NAT64 IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_allowed(address: IpAddress, allow: Collection[IpNetwork] = ()) -> bool:
    """Whether callbacks may go to ``address``: in an allowed network, or a public address."""
    plain = judged_as(address)
    if any(plain in net or address in net for net in allow):
        return True
    if not plain.is_global or plain.is_multicast or plain.is_reserved:
        return False
    return not any(plain in net for net in DENIED_NETWORKS)


def check_target(url: str, allow: Collection[IpNetwork] = ()) -> Target:
    """Subscribe time: the URL's shape (:func:`target_of`) and, for an IP literal, the address. A host
    name is resolved and checked at every delivery, not here (its addresses may change)."""
    target = target_of(url)
    if target.address is not None and not address_allowed(target.address, allow):
        raise TargetNotAllowed(
            f"the webhook URL's address {target.address} is not a public address (private, loopback, "
            "link-local, multicast, reserved or carrier-grade NAT): callbacks go to public addresses "
            "only, unless the operator allows that network (VOXGATE_WEBHOOK_ALLOW_NETWORKS)"
        )
    return target


async def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to, with the event loop's resolver (off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: dict[IpAddress, None] = {}
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope id is no part of the address
        found[ipaddress.ip_address(text)] = None
    return list(found)


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
        allow: Iterable[IpNetwork] = (),
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``allow``: networks callbacks may go to although they are not public; ``resolver``: a host
        name's addresses (tests); ``verify``: the TLS context (default: the system's CAs, or
        ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``)."""
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or queue_size < 1 or workers < 1:
            raise ValueError("timeout_s > 0, retries >= 0, backoff_s >= 0, queue_size >= 1, workers >= 1")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.workers = workers
        self.allow = tuple(allow)
        self._resolver = resolver
        self._verify = verify
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
            allow=settings.webhook_allowed_networks,
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
            # No connection is reused: requests go to checked addresses, so the pool is keyed by address,
            # and a TLS connection whose certificate was checked for one name must never carry a request
            # for another name on the same address. (Bodies are never read, which closes connections
            # anyway.)
            limits=httpx.Limits(max_connections=self.workers, max_keepalive_connections=0),
            # SSL_CERT_FILE / SSL_CERT_DIR are honoured; proxies (HTTP(S)_PROXY) and .netrc are not: a
            # proxy would resolve the name again, out of sight of the address check
            verify=self._verify if self._verify is not None else httpx.create_ssl_context(),
            trust_env=False,
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
        metrics.webhook(delivery.kind, metrics.OUTCOMES_DROPPED)
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
                metrics.webhook(delivery.kind, metrics.OUTCOMES_FAILED)
                self._finished(delivery)
            finally:
                self._queue.task_done()

    async def _attempt(self, delivery: Delivery) -> None:
        if self._client is None:
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
        denied = False
        try:
            async with asyncio.timeout(self.timeout_s):
                status, retry_after_s = await self._post(delivery, headers)
        except TargetNotAllowed as exc:
            denied, error = True, NOT_ALLOWED
            log.warning(  # the operator's log says why; the event and the counters say only NOT_ALLOWED
                "webhook target not allowed: %s",
                exc,
                extra={"subscription": delivery.subscription, "url": redact(delivery.url)},
            )
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {self.timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        stats.last_status, stats.last_error = status, error
        if status is not None and 200 <= status < 300:
            stats.delivered += 1
            metrics.webhook(delivery.kind, metrics.OUTCOMES_DELIVERED)
            self._finished(delivery)
            return
        retryable = not denied and (status is None or status >= 500 or status == 429)
        if retryable and delivery.attempts <= self.retries:
            stats.retries += 1
            metrics.webhook(delivery.kind, metrics.OUTCOMES_RETRIED)
            delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (delivery.attempts - 1))
            self._retry_later(delivery, max(delay, retry_after_s))
            return
        stats.failed += 1
        metrics.webhook(delivery.kind, metrics.OUTCOMES_FAILED)
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

    async def _post(self, delivery: Delivery, headers: dict[str, str]) -> tuple[int, float]:
        """One attempt: check the target, send to a checked address; (status, Retry-After seconds)."""
        client = self._client
        if client is None:
            raise httpx.TransportError("webhooks are stopping")
        target = target_of(delivery.url)
        addresses = [target.address] if target.address is not None else await self._addresses(target)
        url = httpx.URL(delivery.url)
        extensions: dict[str, Any] = {}
        if target.address is None:  # connect to the address, speak to the name
            headers = {**headers, "Host": url.netloc.decode("ascii")}
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host.removesuffix(".")
        failure: Exception | None = None
        for address in addresses:
            try:
                async with client.stream(
                    "POST",
                    url.copy_with(host=str(address)),
                    content=delivery.body,
                    headers=headers,
                    extensions=extensions,
                ) as response:  # the body is never read: a receiver cannot flood us
                    return response.status_code, _retry_after_s(response.headers.get("Retry-After"))
            except httpx.ConnectError as exc:  # that address is down: the next one, if there is one
                failure = exc
        assert failure is not None
        raise failure

    async def _addresses(self, target: Target) -> list[IpAddress]:
        """Every address the host resolves to, each of them allowed (else TargetNotAllowed)."""
        try:
            addresses = list(await self._resolver(target.host, target.port))
        except OSError as exc:
            raise httpx.ConnectError(f"could not resolve {target.host}: {exc}") from None
        if not addresses:
            raise httpx.ConnectError(f"could not resolve {target.host}")
        denied = [a for a in addresses if not address_allowed(a, self.allow)]
        if denied:
            raise TargetNotAllowed(
                f"{target.host} resolves to {', '.join(map(str, denied))}, not a public address"
            )
        return addresses

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
