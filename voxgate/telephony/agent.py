"""A compact asyncio SIP user agent (RFC 3261 over UDP): register to one PBX like a phone, answer its calls.

What it does, and only that:

- **REGISTER** with digest authentication (MD5, SHA-256), refreshed before expiry, retried after a
  failure with exponential backoff; ``Expires: 0`` when stopped.
- **UAS dialogs**: INVITE with an SDP offer -> 100, 200 with our answer (PCMU or PCMA), retransmitted
  until the ACK; BYE either way; CANCEL before the answer (487); OPTIONS (200); re-INVITE (same answer);
  404 for another user, 486 without capacity (streams, RTP ports), 488 without a common codec,
  405/501 for methods we do not take, 481 for unknown dialogs.
- **Routing**: responses follow the top Via (``received``/``rport`` added); a dialog keeps the INVITE's
  Record-Route set and Contact, so our BYE goes through the record-routing proxy (loose or strict).

Client transactions (REGISTER, BYE) retransmit on UDP per timers T1/T2 and give up after 64·T1.
Anything malformed from the network is dropped (or answered 400 where a response can be addressed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from voxgate.errors import ModelNotPrepared, VoxgateError
from voxgate.streams.feeder import Feeder
from voxgate.streams.session import StreamCapacity, StreamNotFound, StreamType
from voxgate.telephony.calls import CallStream, NoRtpPort, PortPool, StreamOpener, call_feeder
from voxgate.telephony.digest import DigestError, authorization, best_challenge
from voxgate.telephony.rtp import SAMPLE_RATE_HZ, RtpReceiver
from voxgate.telephony.sdp import CODECS, MediaOffer, SdpError, answer, choose_codec, parse_offer
from voxgate.telephony.sip.message import (
    NameAddr,
    SipMessage,
    SipParseError,
    SipUri,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
)

log = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 timers, seconds
T2 = 4.0
TRANSACTION_TIMEOUT_S = 64 * T1
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
USER_AGENT = "voxgate"
BYE_GRACE_S = 0.2  # RTP is still taken this long after the caller's BYE


class SipError(VoxgateError):
    """A SIP exchange that failed (timeout, rejection)."""


class TransactionTimeout(SipError):
    """No final response within 64·T1."""


class RegistrationFailed(SipError):
    """The registrar refused the registration."""


@dataclass
class PbxConfig:
    """One PBX to register to, and how to take its calls."""

    id: str
    host: str
    username: str
    password: str
    port: int = 5060
    transport: str = "udp"
    domain: str | None = None  # SIP domain and realm of the account; the host when unset
    expires_s: int = 300
    contact_user: str | None = None  # the user part calls arrive for; the username when unset
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    local_host: str = "0.0.0.0"  # where the SIP and RTP sockets bind
    local_port: int = 0  # SIP port; 0 = any free one
    public_host: str | None = None  # the address the PBX reaches us at; the route toward it when unset

    @property
    def sip_domain(self) -> str:
        return self.domain or self.host

    @property
    def user(self) -> str:
        return self.contact_user or self.username


@dataclass
class AgentOptions:
    rtp_timeout_s: float = 30.0  # a call without RTP this long is hung up
    answer_delay_s: float = 0.0  # ring this long before answering (0: answer at once)
    retry_min_s: float = 2.0  # registration backoff after a failure, doubling up to retry_max_s
    retry_max_s: float = 300.0
    reorder_depth: int = 5
    # hears each incoming call's final answer: (PBX instance id, SIP status: 200 answered, else rejected)
    on_call: Callable[[str, int], None] | None = None


@dataclass
class Registration:
    """What ``GET /api/v2/pbx/{id}`` and ``/api/v2/status`` show of one instance."""

    state: str = "stopped"  # stopped, registering, registered, failed
    reason: str | None = None  # why it failed
    registered_until: datetime | None = None
    next_refresh: datetime | None = None
    failures: int = 0


@dataclass
class Dialog:
    """A call we answered (UAS side of the dialog) and its media."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # the To of the INVITE (us), without its tag
    remote: str  # the From of the INVITE, as received (with the caller's tag)
    remote_target: str  # the caller's Contact URI
    route_set: list[str]  # Record-Route values of the INVITE, in order
    invite: SipMessage
    invite_branch: str
    local_cseq: int = field(default_factory=lambda: random.randint(1, 10000))
    stream: CallStream | None = None
    audio: Feeder[CallStream] | None = None  # RTP samples → the stream (offer: never waits)
    receiver: RtpReceiver | None = None
    rtp: asyncio.DatagramTransport | None = None
    rtp_port: int | None = None
    answered: bool = False  # 200 OK sent
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    ended: bool = False
    last_rtp: float = field(default_factory=time.monotonic)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _new_tag() -> str:
    return secrets.token_hex(6)


def _new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


class SipAgent(asyncio.DatagramProtocol):
    """One PBX instance: a UDP SIP socket, its registration, its calls."""

    def __init__(
        self,
        config: PbxConfig,
        streams: StreamOpener,
        options: AgentOptions | None = None,
        *,
        admit: Callable[[], bool] | None = None,
    ) -> None:
        if config.transport.lower() != "udp":
            raise ValueError(f"transport {config.transport!r} is not supported (only udp)")
        self.config = config
        self.streams = streams
        self.options = options or AgentOptions()
        self.admit = admit  # False while new calls must be refused (maintenance mode): 503
        self.registration = Registration()
        self.dialogs: dict[tuple[str, str], Dialog] = {}  # (call_id, local tag)
        self.ports = PortPool(config.rtp_port_min, config.rtp_port_max)
        self.public_host = ""
        self.local_port = 0
        self.calls_answered = 0
        self.calls_rejected = 0
        self.malformed = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[tuple[str, str], asyncio.Future[SipMessage]] = {}  # client transactions
        self._answered: dict[tuple[str, str], tuple[bytes, tuple[str, int], float]] = {}  # server responses
        self._invites: dict[str, Dialog] = {}  # INVITE branch -> dialog being set up
        self._register_task: asyncio.Task[None] | None = None
        self._reg_call_id = f"{secrets.token_hex(12)}@voxgate"
        self._reg_tag = _new_tag()
        self._reg_cseq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._ending: set[asyncio.Task[None]] = set()  # calls closing after a BYE: awaited, never cancelled
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP socket and start registering (returns at once; see ``registration``)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.config.local_host, self.config.local_port)
        )
        self._transport = transport
        self.local_port = int(transport.get_extra_info("sockname")[1])
        self.public_host = await self._public_host()
        self._stopping = False
        self.registration = Registration(state="registering")
        self._register_task = loop.create_task(self._register_loop(), name=f"sip-register-{self.config.id}")
        log.info(
            "SIP agent started",
            extra={"pbx": self.config.id, "sip_port": self.local_port, "public_host": self.public_host},
        )

    async def stop(self) -> None:
        """Hang up every call (BYE, streams closed), unregister, close the socket."""
        self._stopping = True
        if self._register_task is not None:
            self._register_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._register_task
            self._register_task = None
        # end every call first (streams closed, ports freed), then say BYE, waiting a few seconds at most
        dialogs = [d for d in self.dialogs.values() if not d.ended]
        byes = [(d, self._bye(d)) for d in dialogs]
        await asyncio.gather(*(self._end(d, "pbx_stopped") for d in dialogs), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._send_bye(d, bye) for d, bye in byes), return_exceptions=True), 5
            )
        if self.registration.state == "registered":
            try:
                await asyncio.wait_for(self._register(0), timeout=5)
            except (SipError, OSError, TimeoutError, DigestError) as exc:
                log.warning("unregistering failed: %s", exc, extra={"pbx": self.config.id})
        await asyncio.gather(*self._ending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._ending, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.registration = Registration(state="stopped")
        log.info("SIP agent stopped", extra={"pbx": self.config.id})

    async def _public_host(self) -> str:
        if self.config.public_host:
            return self.config.public_host
        if self.config.local_host not in ("0.0.0.0", "::", ""):
            return self.config.local_host
        try:  # the address the kernel would send from toward the PBX (no packet is sent)
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.config.host, self.config.port, type=socket.SOCK_DGRAM
            )
            family, _, _, _, address = infos[0]
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(address)
                return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception(), extra={"pbx": self.config.id})

    # -- transport -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc, extra={"pbx": self.config.id})

    def _send(self, message: SipMessage | bytes, destination: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        data = message if isinstance(message, bytes) else message.encode()
        self._transport.sendto(data, destination)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if data.strip() == b"":  # CRLF keep-alive (RFC 5626)
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.malformed += 1
            log.debug("malformed SIP dropped: %s", exc, extra={"pbx": self.config.id})
            self._bad_request(data, source, str(exc))
            return
        try:
            if message.is_request:
                self._on_request(message, source)
            else:
                self._on_response(message)
        except (SipParseError, ValueError) as exc:  # a header we need (Via, From, To, URI) is malformed
            self.malformed += 1
            log.debug("SIP message not understood: %s", exc, extra={"pbx": self.config.id})
            if message.is_request and message.method != "ACK":
                self._bad_request(data, source, str(exc))

    def _bad_request(self, data: bytes, source: tuple[str, int], why: str) -> None:
        """A 400 for a request we could not parse, when it has enough to address one; else nothing."""
        text = data.decode("utf-8", "replace")
        if text.startswith("SIP/") or text.startswith("ACK "):
            return
        lines = text.replace("\r\n", "\n").split("\n")
        keep = [
            line
            for line in lines[1:]
            if line.split(":", 1)[0].strip().lower()
            in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
        ]
        if not any(line.lower().startswith(("via", "v:")) for line in keep):
            return
        reason = why.replace("\r", " ").replace("\n", " ")[:100]
        response = "\r\n".join([f"SIP/2.0 400 Bad Request ({reason})", *keep, "Content-Length: 0", "", ""])
        self._send(response.encode("utf-8", "replace"), source)

    # -- client transactions -------------------------------------------------------------------------

    def _on_response(self, response: SipMessage) -> None:
        via = parse_via(response.headers.get("Via") or "")
        _, method = response.cseq()
        future = self._pending.get((via.branch, method))
        if future is None or future.done():
            return  # a retransmitted or stray response
        if response.status is not None and response.status >= 200:
            future.set_result(response)

    async def _request(self, request: SipMessage, destination: tuple[str, int]) -> SipMessage:
        """Send a non-INVITE request and wait for its final response (retransmitting over UDP)."""
        via = parse_via(request.headers.get("Via") or "")
        key = (via.branch, request.method or "")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SipMessage] = loop.create_future()
        self._pending[key] = future
        data = request.encode()
        deadline = loop.time() + TRANSACTION_TIMEOUT_S
        interval = T1
        try:
            while True:
                self._send(data, destination)
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(future), min(interval, deadline - loop.time())
                    )
                except TimeoutError:
                    if loop.time() >= deadline - 1e-3:
                        raise TransactionTimeout(
                            f"{request.method}: no response from {destination}"
                        ) from None
                    interval = min(interval * 2, T2)
        finally:
            self._pending.pop(key, None)
            future.cancel()

    def _via(self) -> str:
        return f"SIP/2.0/UDP {self._hostport()};branch={_new_branch()};rport"

    def _hostport(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"{host}:{self.local_port}"

    def _contact(self) -> str:
        return f"<sip:{self.config.user}@{self._hostport()};transport=udp>"

    async def _resolve(self, host: str, port: int | None) -> tuple[str, int]:
        port = port or 5060
        if _ip_literal(host):
            return host, port
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return str(infos[0][4][0]), int(infos[0][4][1])

    # -- registration --------------------------------------------------------------------------------

    async def _register_loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                expires = await self._register(self.config.expires_s)
            except (SipError, DigestError, OSError) as exc:
                failures += 1
                delay = min(self.options.retry_max_s, self.options.retry_min_s * 2 ** (failures - 1))
                delay *= random.uniform(0.8, 1.0)
                self.registration = Registration(
                    state="failed",
                    reason=str(exc) or type(exc).__name__,
                    next_refresh=datetime.now(UTC) + timedelta(seconds=delay),
                    failures=failures,
                )
                log.warning(
                    "SIP registration failed, retrying in %.0f s: %s",
                    delay,
                    exc,
                    extra={"pbx": self.config.id},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            # refresh well before expiry: halfway for short registrations, 80 % (at most 60 s early) otherwise
            refresh = expires / 2 if expires < 120 else max(expires * 0.8, expires - 60)
            now = datetime.now(UTC)
            self.registration = Registration(
                state="registered",
                registered_until=now + timedelta(seconds=expires),
                next_refresh=now + timedelta(seconds=refresh),
            )
            log.info("SIP registered for %d s", expires, extra={"pbx": self.config.id})
            await asyncio.sleep(refresh)

    async def _register(self, expires: int) -> int:
        """One registration (or removal, ``expires`` 0), answering up to two challenges; the granted expiry."""
        config = self.config
        destination = await self._resolve(config.host, config.port)
        request_uri = f"sip:{config.sip_domain}"
        if config.domain is None and config.port != 5060:
            request_uri += f":{config.port}"
        aor = f"<sip:{config.username}@{config.sip_domain}>"
        authorization_header: tuple[str, str] | None = None
        for _attempt in range(3):
            self._reg_cseq += 1
            request = SipMessage(method="REGISTER", uri=request_uri)
            headers = request.headers
            headers.add("Via", self._via())
            headers.add("Max-Forwards", "70")
            headers.add("From", f"{aor};tag={self._reg_tag}")
            headers.add("To", aor)
            headers.add("Call-ID", self._reg_call_id)
            headers.add("CSeq", f"{self._reg_cseq} REGISTER")
            headers.add("Contact", self._contact())
            headers.add("Expires", str(expires))
            headers.add("Allow", ALLOW)
            headers.add("User-Agent", USER_AGENT)
            if authorization_header is not None:
                headers.add(*authorization_header)
            response = await self._request(request, destination)
            status = response.status or 0
            if status in (401, 407):
                name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                challenge = best_challenge(response.headers.get_all(name))
                if authorization_header is not None and not challenge.stale:
                    raise RegistrationFailed(f"{status} {response.reason}: the credentials were refused")
                answer_name = "Authorization" if status == 401 else "Proxy-Authorization"
                value = authorization(challenge, "REGISTER", request_uri, config.username, config.password)
                authorization_header = (answer_name, value)
                continue
            if status == 423:
                minimum = response.headers.get("Min-Expires") or ""
                if minimum.isdecimal() and expires and int(minimum) > expires:
                    expires = int(minimum)
                    continue
            if not 200 <= status < 300:
                raise RegistrationFailed(f"{status} {response.reason}".strip())
            return self._granted(response, expires)
        raise RegistrationFailed("the registrar kept challenging")

    def _granted(self, response: SipMessage, asked: int) -> int:
        if asked == 0:
            return 0
        mine = f"@{self._hostport()}"
        for value in response.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
            except SipParseError:
                continue
            if mine in contact.uri and contact.params.get("expires", "").isdecimal():
                return max(1, int(contact.params["expires"]))
        header = response.headers.get("Expires") or ""
        return max(1, int(header)) if header.isdecimal() else asked

    # -- requests from the network -------------------------------------------------------------------

    def _on_request(self, request: SipMessage, source: tuple[str, int]) -> None:
        self._fix_via(request, source)
        method = request.method or ""
        branch = _transaction(request)
        cached = self._answered.get((branch, method))
        if cached is not None and method != "ACK":
            self._send(cached[0], cached[1])  # a retransmission: the same answer again
            return
        if method == "INVITE":
            self._on_invite(request, source, branch)
        elif method == "ACK":
            self._on_ack(request)
        elif method == "BYE":
            self._on_bye(request, source)
        elif method == "CANCEL":
            self._on_cancel(request, source, branch)
        elif method == "OPTIONS":
            self._respond(request, source, 200, "OK", extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method in ("INFO", "UPDATE"):
            found = self._dialog_of(request) is not None
            self._respond(
                request, source, 200 if found else 481, "OK" if found else "Call/Transaction Does Not Exist"
            )
        elif method in ("REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PRACK", "PUBLISH"):
            self._respond(request, source, 405, "Method Not Allowed", extra=[("Allow", ALLOW)])
        else:
            self._respond(request, source, 501, "Not Implemented", extra=[("Allow", ALLOW)])

    @staticmethod
    def _fix_via(request: SipMessage, source: tuple[str, int]) -> None:
        """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via, for our responses."""
        items = request.headers.items
        index = next(i for i, (name, _) in enumerate(items) if name == "Via")
        via = parse_via(items[index][1])
        if via.host != source[0]:
            via.params["received"] = source[0]
        if "rport" in via.params and not via.params["rport"]:
            via.params["rport"] = str(source[1])
        items[index] = ("Via", str(via))

    def _response_destination(self, request: SipMessage, source: tuple[str, int]) -> tuple[str, int]:
        via = parse_via(request.headers.get("Via") or "")
        host = via.params.get("received") or via.host
        if not _ip_literal(host):
            host = source[0]
        rport = via.params.get("rport", "")
        port = int(rport) if rport.isdecimal() else via.port or 5060
        return host, port

    def _respond(
        self,
        request: SipMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        *,
        to_tag: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        remember: bool = True,
    ) -> SipMessage:
        headers = [("User-Agent", USER_AGENT), *(extra or [])]
        response = response_to(request, status, reason, to_tag=to_tag or _new_tag(), extra=headers)
        response.body = body
        destination = self._response_destination(request, source)
        data = response.encode()
        self._send(data, destination)
        if remember and status >= 200:
            self._remember((_transaction(request), request.method or ""), data, destination)
        return response

    def _remember(self, key: tuple[str, str], data: bytes, destination: tuple[str, int]) -> None:
        now = time.monotonic()
        self._answered[key] = (data, destination, now)
        if len(self._answered) > 256:  # forget answers older than a transaction's lifetime
            self._answered = {k: v for k, v in self._answered.items() if now - v[2] < TRANSACTION_TIMEOUT_S}

    def _dialog_of(self, request: SipMessage) -> Dialog | None:
        to = parse_name_addr(request.headers.get("To") or "")
        if to.tag is None:
            return None
        return self.dialogs.get((request.call_id, to.tag))

    # -- INVITE --------------------------------------------------------------------------------------

    def _on_invite(self, request: SipMessage, source: tuple[str, int], branch: str) -> None:
        if branch in self._invites:  # retransmission while we set the call up
            self._respond(request, source, 100, "Trying", remember=False)
            return
        to = parse_name_addr(request.headers.get("To") or "")
        if to.tag is not None:  # re-INVITE (session refresh, hold): keep the media as it is
            dialog = self.dialogs.get((request.call_id, to.tag))
            if dialog is None or dialog.rtp_port is None:
                self._respond(request, source, 481, "Call/Transaction Does Not Exist")
                return
            self._reanswer(dialog, request, source)
            return
        if self._stopping or (self.admit is not None and not self.admit()):
            self._reject(request, source, 503, "Service Unavailable")
            return
        uri = parse_uri(request.uri or "")
        if uri.user not in (self.config.user, self.config.username):
            self._reject(request, source, 404, "Not Found")
            return
        if (request.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/sdp":
            self._reject(request, source, 488, "Not Acceptable Here", warning="an SDP offer is required")
            return
        try:
            offer = parse_offer(request.body)
        except SdpError as exc:
            self._reject(request, source, 488, "Not Acceptable Here", warning=str(exc))
            return
        payload_type = choose_codec(offer, self.config.codecs)
        if payload_type is None:
            self._reject(request, source, 488, "Not Acceptable Here", warning="no common codec (PCMU, PCMA)")
            return
        sender = parse_name_addr(request.headers.get("From") or "")
        contact_values = request.headers.get_all("Contact")
        if sender.tag is None or not contact_values:
            self._reject(request, source, 400, "Bad Request")
            return
        contact = parse_name_addr(contact_values[0])
        parse_uri(contact.uri)  # must be routable
        dialog = Dialog(
            call_id=request.call_id,
            local_tag=_new_tag(),
            remote_tag=sender.tag,
            local_uri=NameAddr(to.uri, to.display),
            remote=request.headers.get("From") or "",
            remote_target=contact.uri,
            route_set=request.headers.get_all("Record-Route"),
            invite=request,
            invite_branch=branch,
        )
        self._invites[branch] = dialog
        self._respond(request, source, 100, "Trying", remember=False)
        self._spawn(self._answer(dialog, source, offer, payload_type), name=f"sip-answer-{dialog.call_id}")

    def _reject(
        self, request: SipMessage, source: tuple[str, int], status: int, reason: str, warning: str = ""
    ) -> None:
        self.calls_rejected += 1
        self._counted(status)
        extra = [("Warning", f'399 voxgate "{warning}"')] if warning else []
        self._respond(request, source, status, reason, extra=extra)
        log.info(
            "call rejected: %d %s", status, reason, extra={"pbx": self.config.id, "callid": request.call_id}
        )

    async def _answer(
        self, dialog: Dialog, source: tuple[str, int], offer: MediaOffer, payload_type: int
    ) -> None:
        request = dialog.invite
        try:
            if self.options.answer_delay_s > 0:
                self._respond(request, source, 180, "Ringing", to_tag=dialog.local_tag, remember=False)
                await asyncio.sleep(self.options.answer_delay_s)
                if dialog.cancelled:
                    return
            receiver = RtpReceiver(
                lambda samples: None,
                offer.connection,
                frozenset({payload_type}),
                depth=self.options.reorder_depth,
                on_packet=lambda: setattr(dialog, "last_rtp", time.monotonic()),
            )
            try:
                dialog.rtp, dialog.rtp_port = await self.ports.open(self.config.local_host, receiver)
            except NoRtpPort as exc:
                self._reject(request, source, 486, "Busy Here", warning=str(exc))
                return
            dialog.receiver = receiver
            caller = parse_name_addr(dialog.remote)
            info = {
                "callid": dialog.call_id,
                "caller": _user_or_uri(caller.uri),
                "callee": _user_or_uri(dialog.local_uri.uri),
                "pbx": self.config.id,
            }
            try:
                dialog.stream = await self.streams.create(StreamType.SIP, SAMPLE_RATE_HZ, info)
            except StreamCapacity as exc:
                self._reject(request, source, 486, "Busy Here", warning=str(exc))
                return
            except ModelNotPrepared as exc:
                self._reject(request, source, 503, "Service Unavailable", warning=str(exc))
                return
            if dialog.cancelled:
                return
            dialog.audio = call_feeder(dialog.stream, self.streams)
            receiver.sink = dialog.audio.offer
            body = answer(offer, self.public_host, dialog.rtp_port, payload_type)
            self.dialogs[(dialog.call_id, dialog.local_tag)] = dialog
            dialog.answered = True
            dialog.last_rtp = time.monotonic()
            self.calls_answered += 1
            self._counted(200)
            ok = self._ok_for_invite(dialog, request, body)
            destination = self._response_destination(request, source)
            self._remember((dialog.invite_branch, "INVITE"), ok, destination)
            self._send(ok, destination)
            log.info(
                "call answered",
                extra={
                    "pbx": self.config.id,
                    "callid": dialog.call_id,
                    "stream_uuid": dialog.stream.uuid,
                    "codec": "PCMU" if payload_type == CODECS["PCMU"] else "PCMA",
                    "rtp_port": dialog.rtp_port,
                },
            )
            dialog.tasks.add(
                self._spawn(self._retransmit_ok(dialog, ok, destination), f"sip-ok-{dialog.call_id}")
            )
            dialog.tasks.add(self._spawn(self._watch(dialog), f"sip-watch-{dialog.call_id}"))
        finally:
            self._invites.pop(dialog.invite_branch, None)
            if not dialog.answered:
                await self._release(dialog, "call_cancelled")

    def _counted(self, status: int) -> None:
        if self.options.on_call is not None:
            self.options.on_call(self.config.id, status)

    def _ok_for_invite(self, dialog: Dialog, request: SipMessage, body: bytes) -> bytes:
        response = response_to(
            request,
            200,
            "OK",
            to_tag=dialog.local_tag,
            extra=[
                ("Contact", self._contact()),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
                ("User-Agent", USER_AGENT),
            ],
        )
        response.body = body
        return response.encode()

    def _reanswer(self, dialog: Dialog, request: SipMessage, source: tuple[str, int]) -> None:
        cached = self._answered.get((dialog.invite_branch, "INVITE"))
        body = b""
        if cached is not None:
            body = cached[0].partition(b"\r\n\r\n")[2]
        self._respond(
            request,
            source,
            200,
            "OK",
            to_tag=dialog.local_tag,
            extra=[("Contact", self._contact()), ("Allow", ALLOW), ("Content-Type", "application/sdp")],
            body=body,
        )

    async def _retransmit_ok(self, dialog: Dialog, ok: bytes, destination: tuple[str, int]) -> None:
        """2xx to INVITE is the UAS core's to retransmit until the ACK (RFC 3261 §13.3.1.4)."""
        interval, waited = T1, 0.0
        while not dialog.acked.is_set() and not dialog.ended:
            try:
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                if waited >= TRANSACTION_TIMEOUT_S:
                    log.warning("no ACK for our 200 OK: hanging up", extra={"callid": dialog.call_id})
                    await self.hangup(dialog, "no_ack")
                    return
                self._send(ok, destination)
                interval = min(interval * 2, T2)

    async def _watch(self, dialog: Dialog) -> None:
        """Ends the call when RTP stops (``rtp_timeout``) or its stream was closed by someone else; keeps
        the stream from the registry's idle timeout while the call is up."""
        while not dialog.ended:
            await asyncio.sleep(min(1.0, self.options.rtp_timeout_s / 4))
            if dialog.ended:
                return
            stream = dialog.stream
            if stream is not None and stream.closed:
                await self.hangup(dialog, "stream_closed")
                return
            if time.monotonic() - dialog.last_rtp > self.options.rtp_timeout_s:
                log.info("no RTP: hanging up", extra={"pbx": self.config.id, "callid": dialog.call_id})
                await self.hangup(dialog, "rtp_timeout")
                return
            if stream is not None:
                stream.touch()

    def _on_ack(self, request: SipMessage) -> None:
        dialog = self._dialog_of(request)
        if dialog is not None:
            dialog.acked.set()
        # an ACK for a non-2xx final response ends its transaction: nothing to do on UDP

    def _on_cancel(self, request: SipMessage, source: tuple[str, int], branch: str) -> None:
        dialog = self._invites.get(branch)
        if dialog is None:
            answered = self._answered.get((branch, "INVITE"))
            status, reason = (200, "OK") if answered is not None else (481, "Call/Transaction Does Not Exist")
            self._respond(request, source, status, reason)
            return
        dialog.cancelled = True
        self._respond(request, source, 200, "OK", to_tag=dialog.local_tag)
        self._respond(dialog.invite, source, 487, "Request Terminated", to_tag=dialog.local_tag)
        self._counted(487)
        log.info("call cancelled before the answer", extra={"pbx": self.config.id, "callid": dialog.call_id})

    def _on_bye(self, request: SipMessage, source: tuple[str, int]) -> None:
        dialog = self._dialog_of(request)
        if dialog is None or dialog.ended:
            self._respond(request, source, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(request, source, 200, "OK")
        dialog.acked.set()
        ending = self._spawn(
            self._end(dialog, "call_ended", grace_s=BYE_GRACE_S), f"sip-end-{dialog.call_id}"
        )
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    # -- ending calls --------------------------------------------------------------------------------

    async def hangup(self, dialog: Dialog, reason: str) -> None:
        """End a call from our side: BYE through the route set, then release its media and stream."""
        if dialog.ended:
            return
        bye = self._bye(dialog)
        await self._end(dialog, "call_ended" if reason == "stream_closed" else reason)
        await self._send_bye(dialog, bye)

    async def _send_bye(self, dialog: Dialog, bye: SipMessage) -> None:
        try:
            destination = await self._next_hop(dialog)
            response = await self._request(bye, destination)
            if (response.status or 0) >= 300:
                log.info("BYE answered %s", response.status, extra={"callid": dialog.call_id})
        except (SipError, OSError, SipParseError) as exc:
            log.info("BYE not answered: %s", exc, extra={"pbx": self.config.id, "callid": dialog.call_id})

    def _bye(self, dialog: Dialog) -> SipMessage:
        dialog.local_cseq += 1
        routes = list(dialog.route_set)
        request_uri = dialog.remote_target
        if routes and "lr" not in parse_uri(parse_name_addr(routes[0]).uri).params:  # strict router
            request_uri = parse_name_addr(routes[0]).uri
            routes = [*routes[1:], f"<{dialog.remote_target}>"]
        bye = SipMessage(method="BYE", uri=request_uri)
        headers = bye.headers
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        local = NameAddr(dialog.local_uri.uri, dialog.local_uri.display, {"tag": dialog.local_tag})
        headers.add("From", str(local))
        headers.add("To", dialog.remote)
        headers.add("Call-ID", dialog.call_id)
        headers.add("CSeq", f"{dialog.local_cseq} BYE")
        headers.add("User-Agent", USER_AGENT)
        return bye

    async def _next_hop(self, dialog: Dialog) -> tuple[str, int]:
        """Where an in-dialog request goes: the first route, else the remote target (maddr honoured)."""
        target = parse_name_addr(dialog.route_set[0]).uri if dialog.route_set else dialog.remote_target
        uri: SipUri = parse_uri(target)
        return await self._resolve(uri.params.get("maddr") or uri.host, uri.port)

    async def _end(self, dialog: Dialog, reason: str, grace_s: float = 0.0) -> None:
        if dialog.ended:
            return
        dialog.ended = True
        self.dialogs.pop((dialog.call_id, dialog.local_tag), None)
        current = asyncio.current_task()
        for task in dialog.tasks:
            if task is not current:
                task.cancel()
        if grace_s > 0:  # RTP sent just before the BYE may still be on its way (another socket)
            await asyncio.sleep(grace_s)
        # the release (stream closed, port freed) must finish even if whoever ends the call is cancelled
        release = asyncio.get_running_loop().create_task(self._release(dialog, reason))
        self._ending.add(release)
        release.add_done_callback(self._ending.discard)
        await asyncio.shield(release)
        log.info("call ended: %s", reason, extra={"pbx": self.config.id, "callid": dialog.call_id})

    async def _release(self, dialog: Dialog, reason: str) -> None:
        """Close the RTP port, hand the last audio over, close the stream."""
        dialog.ended = True
        if dialog.rtp is not None:
            dialog.rtp.close()
            dialog.rtp = None
        if dialog.receiver is not None:
            dialog.receiver.flush()
        if dialog.rtp_port is not None:
            self.ports.release(dialog.rtp_port)
        if dialog.audio is not None:
            await dialog.audio.finish()
        stream, dialog.stream = dialog.stream, None
        if stream is not None and not stream.closed:
            with contextlib.suppress(StreamNotFound):
                await self.streams.close(stream.uuid, reason)

    # -- what the API shows ----------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        return len(self.dialogs)


def _transaction(request: SipMessage) -> str:
    """The server transaction a request belongs to: its RFC 3261 branch, or for older peers without a
    magic-cookie branch, Call-ID + From tag + CSeq number (RFC 3261 §17.2.3)."""
    branch = parse_via(request.headers.get("Via") or "").branch
    if branch.startswith("z9hG4bK"):
        return branch
    sender = parse_name_addr(request.headers.get("From") or "")
    return f"{branch}|{request.call_id}|{sender.tag}|{request.cseq()[0]}"


def _user_or_uri(uri: str) -> str:
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return uri
    return parsed.user or str(parsed)
