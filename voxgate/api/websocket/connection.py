"""One WebSocket connection of the door: the handshake, its streams (keyed by streamSid), pings and replies.

::

    reader (the endpoint's task) ─ decode ─► connected → 200; a ping every VOXGATE_WS_PING_INTERVAL_S
                                             start     → registry.create → a StreamFeeder → 201
                                             media     → touch; the fed track's codes → its feeder
                                             stop      → the feeder hands over the rest, the stream closes → 204
    StreamFeeder, one task per stream (the shared voxgate.streams.feeder.Feeder): decoded G.711 in
    BATCH_S batches → StreamSession.feed, in order
    writer task: every reply and ping, in order (nothing else awaits the socket)
    WebSocketDoor.on_stop (the registry's stop listener): a stream closed elsewhere (idle 408,
    force_off 423, shutdown 503) is answered once and dropped from its connection

A stream's ``feed`` may wait (the engine slows a stream that is far behind): its feeder's queue absorbs
the stream's ``max_backlog_s`` of audio without holding up the connection's other streams. Beyond that
the reader waits for room (``Feeder.put``): the client is slowed, no audio is dropped, and meanwhile the
connection's streams count as active (the delay is voxgate's, not the client's). The door only turns
frames into PCM; the biometrics happen in the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from voxgate.api.websocket import protocol as wire
from voxgate.api.websocket.bots import BotChannel
from voxgate.audio.g711 import alaw_decode_float, ulaw_decode_float
from voxgate.errors import VoxgateError
from voxgate.service.maintenance import LOCK_HINT
from voxgate.store import accounts, events
from voxgate.streams import StreamExists, StreamNotFound, StreamSession, StreamType
from voxgate.streams.feeder import Feeder

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

REMEMBERED_SIDS = 256  # per connection: closed streams (their uuid in 404 replies) and sids answered 404

DISCONNECTED = "disconnected"  # close reason of the streams of a dropped connection
FAILED = "error"  # close reason of a stream whose audio could not be fed
# why a stream closed elsewhere (the registry's reason) → what its client hears: (status, event)
CLOSE_REPLIES: dict[str, tuple[int, str]] = {
    "idle_timeout": (wire.TIMEOUT, "media"),
    "no_audio": (wire.TIMEOUT, "media"),
    "force_off": (wire.MAINTENANCE, "stop"),
    "shutdown": (wire.UNAVAILABLE, "stop"),
}
HANDSHAKE_FIRST = (
    'Connection not established: send {"event": "connected", "protocol": "Call", "version": "1.0.0"} first.'
)


@dataclass(frozen=True)
class _Hangup:
    code: int
    reason: str


class StreamFeeder(Feeder[StreamSession]):
    """One stream's audio path: the shared :class:`~voxgate.streams.feeder.Feeder` (batches, a bounded
    queue, its own feeding task: a stream that waits never holds up the others) fed decoded G.711, plus
    what the connection needs to answer for the stream."""

    def __init__(
        self,
        sid: str,
        session: StreamSession,
        request: wire.StreamRequest,
        on_failure: Callable[[StreamFeeder, Exception], Awaitable[None]],
    ) -> None:
        super().__init__(session, on_failure=lambda exc: on_failure(self, exc), name="websocket-feed")
        self.sid = sid
        self.track = request.track
        self.stopping = False  # its connection is closing it (or was told it closed): no further reply
        self._decode = ulaw_decode_float if request.encoding is wire.Encoding.MULAW else alaw_decode_float

    async def add(self, codes: bytes, waiting: Callable[[], None]) -> None:
        """One media payload: decoded and queued; waits only while the queue is full (the client is
        slowed), calling ``waiting`` meanwhile."""
        await self.put(self._decode(codes), waiting)  # (samples,) float32 at 8 kHz


class Connection:
    """One client connection, from the accepted handshake until it leaves; every stream it opened is
    closed when it goes (none leaks)."""

    def __init__(
        self, websocket: WebSocket, runtime: Runtime, door: WebSocketDoor, *, path: str, token: str
    ) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.door = door
        self.path = path  # for events; never the token
        self._token = token  # checked again at every new stream: a revoked token opens nothing more
        self.streams: dict[str, StreamFeeder] = {}  # running streams by streamSid
        self._finishing: set[StreamFeeder] = set()  # stopped, still handing their audio over
        self._tasks: set[asyncio.Task[None]] = set()
        self._gone: OrderedDict[str, str] = OrderedDict()  # sid → uuid of a stream that closed
        self._told: OrderedDict[str, None] = OrderedDict()  # sids whose media was answered 404 (once)
        self._outbox: asyncio.Queue[str | _Hangup] = asyncio.Queue()
        self._established = False
        self._pinger: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.bot = BotChannel(self)  # a voice bot's activities on this connection

    async def run(self) -> None:
        """Read messages until the client leaves (or is refused), then close its streams."""
        self._writer = asyncio.create_task(self._write(), name="websocket-writer")
        self.door.connections.add(self)
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text")
                try:
                    if not await self._handle(data if data is not None else message.get("bytes")):
                        return
                except Exception:  # a bug must not take the connection (or the server) down
                    log.exception("WebSocket message failed")
                    await self._refuse(
                        wire.StreamReply.of(
                            wire.INTERNAL_ERROR,
                            "error",
                            None,
                            None,
                            detail="the message could not be handled",
                        )
                    )
        finally:
            await asyncio.shield(self._cleanup())

    def hang_up_soon(self, code: int, reason: str) -> None:
        """Close the connection after the replies already queued (server shutdown)."""
        self._outbox.put_nowait(_Hangup(code, reason))

    # -- messages --------------------------------------------------------------------------------------

    async def _handle(self, data: str | bytes | None) -> bool:
        """One message; False when the connection must end."""
        try:
            message = wire.decode(data)
        except wire.ProtocolError as exc:
            await self._protocol_error(exc)
            return True
        if isinstance(message, wire.Connected):
            return await self._connected(message)
        if isinstance(message, wire.OtherEvent):
            return True  # mark, dtmf, clear...: nothing to do with the caller's voice
        if isinstance(message, wire.BotMessage):
            await self.bot.handle(message)  # a bot needs no media handshake (status, delete)
            return True
        if not self._established:
            await self._refuse(
                wire.StreamReply.of(wire.BAD_REQUEST, message.event, message.sid, None, msg=HANDSHAKE_FIRST)
            )
        elif isinstance(message, wire.Start):
            await self._start(message)
        elif isinstance(message, wire.Media):
            await self._media(message)
        else:
            await self._stop(message)
        return True

    async def _connected(self, message: wire.Connected) -> bool:
        if message.version != wire.PROTOCOL_VERSION:
            given = "no version" if message.version is None else f"version {message.version}"
            msg = f"Unsupported protocol: {given}; only {wire.PROTOCOL_VERSION} is accepted."
            self._send(wire.ConnectedReply(version=message.version, msg=msg, status=wire.BAD_REQUEST))
            await self.door.record_error(wire.BAD_REQUEST, msg, path=self.path, event="connected")
            await self._hang_up(1002, "unsupported protocol version")
            return False
        self._send(wire.ConnectedReply())
        if not self._established:
            self._established = True
            self._pinger = asyncio.create_task(self._ping(), name="websocket-ping")
        return True

    async def _start(self, message: wire.Start) -> None:
        sid = message.sid
        try:
            request = wire.stream_request(message)
        except wire.ProtocolError as exc:
            await self._protocol_error(exc)
            return
        stream_uuid = request.uuid

        def refused(status: int, detail: str) -> wire.StreamReply:
            return wire.StreamReply.of(status, "start", sid, stream_uuid, detail=detail)

        if sid in self.streams:
            detail = (
                f"streamSid {sid!r} is already running on this connection (stream {self.streams[sid].uuid})"
            )
            await self._refuse(refused(wire.EXISTS, detail))
            return
        if await accounts.user_for_token(self.runtime.store.sessions, self._token) is None:
            await self._refuse(
                refused(
                    wire.UNAUTHORIZED,
                    "the connection's token was revoked or has expired (password change, logout, reset): "
                    "reconnect with a valid token",
                )
            )
            return
        if self.runtime.locked:
            await self._refuse(refused(wire.MAINTENANCE, LOCK_HINT))
            return
        registry = self.runtime.registry
        if registry is None:
            await self._refuse(
                refused(wire.CONNECTION_ERROR, "streams are not running (starting or stopping)")
            )
            return
        try:
            session = await registry.create(
                StreamType.WEBSOCKET, wire.SAMPLE_RATE_HZ, request.info, uuid=stream_uuid
            )
        except StreamExists as exc:
            await self._refuse(refused(wire.EXISTS, exc.message))
            return
        except VoxgateError as exc:  # capacity, or the models are not prepared
            await self._refuse(refused(wire.UNAVAILABLE, exc.message))
            return
        if session.closed:  # closed while its start was recorded (a force_off at that very moment)
            self._closed_reply(sid, stream_uuid, session.close_reason or "closed")
            return
        feeder = StreamFeeder(sid, session, request, self._feed_failed)
        self.streams[sid] = feeder
        self._gone.pop(sid, None)
        self._told.pop(sid, None)
        self.door.own(self, feeder)
        log.info("WebSocket stream started", extra={"stream_uuid": stream_uuid, "stream_sid": sid})
        self._send(wire.StreamReply.of(wire.STARTED, "start", sid, stream_uuid))

    async def _media(self, message: wire.Media) -> None:
        sid = message.sid
        feeder = self.streams.get(sid)
        if feeder is None:
            if sid not in self._told:  # once per sid: a client may go on sending 50 frames a second
                _remember(self._told, sid, None)
                detail = (
                    f"no running stream {sid!r} on this connection (never started, stopped, or timed out)"
                )
                await self._refuse(
                    wire.StreamReply.of(wire.NOT_FOUND, "media", sid, self._gone.get(sid), detail=detail)
                )
            return
        feeder.session.touch()
        track = message.media.track
        if track is not None and wire.track_name(track) != feeder.track:
            return  # the other party of the call (outbound when both tracks come): not the caller's voice
        if message.media.codes:
            await feeder.add(message.media.codes, self._touch_all)

    async def _stop(self, message: wire.Stop) -> None:
        sid = message.sid
        feeder = self.streams.pop(sid, None)
        if feeder is None:
            detail = f"no running stream {sid!r} on this connection (never started, stopped, or timed out)"
            await self._refuse(
                wire.StreamReply.of(wire.NOT_FOUND, "stop", sid, self._gone.get(sid), detail=detail)
            )
            return
        feeder.stopping = True
        _remember(self._gone, sid, feeder.uuid)
        self._finishing.add(feeder)
        task = asyncio.create_task(self._finish(feeder), name=f"websocket-stop-{feeder.uuid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, feeder: StreamFeeder) -> None:
        """A stop, off the reader: feed what was received, close the stream, answer 204."""
        await feeder.finish()
        self._finishing.discard(feeder)
        await self._close_stream(feeder, "closed")
        log.info("WebSocket stream stopped", extra={"stream_uuid": feeder.uuid, "stream_sid": feeder.sid})
        self._send(wire.StreamReply.of(wire.STOPPED, "stop", feeder.sid, feeder.uuid))

    # -- streams closed elsewhere, or failing ------------------------------------------------------------

    def stream_closed(self, feeder: StreamFeeder, reason: str) -> None:
        """The registry closed one of this connection's streams (idle, force_off, shutdown): tell the
        client once, drop the stream."""
        if feeder.stopping:
            return  # the connection closed it itself and answers for it
        feeder.stopping = True
        feeder.abandon()
        if self.streams.get(feeder.sid) is feeder:
            del self.streams[feeder.sid]
        _remember(self._gone, feeder.sid, feeder.uuid)
        self._closed_reply(feeder.sid, feeder.uuid, reason)

    def _closed_reply(self, sid: str, stream_uuid: str, reason: str) -> None:
        status, event = CLOSE_REPLIES.get(reason, (wire.STOPPED, "stop"))
        if reason == "no_audio":
            first_s = self.runtime.settings.stream_first_audio_timeout_s
            detail = f"no media within {first_s:g} s of the start"
        elif status == wire.TIMEOUT:
            registry = self.runtime.registry
            idle_s = registry.idle_timeout_s if registry is not None else None
            detail = f"no media for {idle_s:g} s" if idle_s is not None else "no media"
        else:
            detail = f"the stream was closed ({reason})"
        self._send(wire.StreamReply.of(status, event, sid, stream_uuid, detail=detail))

    async def _feed_failed(self, feeder: StreamFeeder, exc: Exception) -> None:
        log.error(
            "feeding a WebSocket stream failed: %s", exc, exc_info=exc, extra={"stream_uuid": feeder.uuid}
        )
        if self.streams.get(feeder.sid) is feeder:
            del self.streams[feeder.sid]
        if not feeder.stopping:
            feeder.stopping = True
            _remember(self._gone, feeder.sid, feeder.uuid)
            detail = f"the stream's audio could not be processed ({exc}); the stream is closed"
            await self._refuse(
                wire.StreamReply.of(wire.INTERNAL_ERROR, "media", feeder.sid, feeder.uuid, detail=detail)
            )
            await self._close_stream(feeder, FAILED)

    async def _close_stream(self, feeder: StreamFeeder, reason: str) -> None:
        """Close the feeder's stream in the registry, unless it is already gone (never a namesake)."""
        registry = self.runtime.registry
        if registry is None:
            return  # shutting down: the registry closes every stream itself
        try:
            if registry.get(feeder.uuid) is feeder.session:
                await registry.close(feeder.uuid, reason)
        except StreamNotFound:
            pass

    def _touch_all(self) -> None:
        for feeder in self.streams.values():
            feeder.session.touch()

    # -- replies -----------------------------------------------------------------------------------------

    def _send(self, reply: wire.WireModel) -> None:
        self._outbox.put_nowait(reply.encode())

    def send_text(self, text: str) -> None:
        """A message of another protocol on this connection (a voice bot's events), in order."""
        self._outbox.put_nowait(text)

    async def refuse(self, reply: wire.StreamReply) -> None:
        await self._refuse(reply)

    async def token_valid(self) -> bool:
        """The connection's token still opens things (a revoked one opens no stream and runs no bot
        operation)."""
        return await accounts.user_for_token(self.runtime.store.sessions, self._token) is not None

    async def _refuse(self, reply: wire.StreamReply) -> None:
        """An error reply, and an error event like every refused REST request."""
        self._send(reply)
        await self.door.record_error(
            reply.status,
            reply.detail or reply.msg,
            path=self.path,
            event=reply.event,
            stream_sid=reply.id,
            stream_uuid=reply.uuid,
        )

    async def _protocol_error(self, exc: wire.ProtocolError) -> None:
        await self._refuse(
            wire.StreamReply.of(exc.status, exc.event or "error", exc.sid, None, msg=exc.message)
        )

    async def _ping(self) -> None:
        interval_s = self.runtime.settings.ws_ping_interval_s
        while True:
            await asyncio.sleep(interval_s)
            self._outbox.put_nowait(wire.PING_TEXT)

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, _Hangup):
                    await self.websocket.close(item.code, item.reason)
                    return
                await self.websocket.send_text(item)
            except Exception as exc:  # the client is gone; the reader hears the disconnect
                log.debug("WebSocket send failed: %s", exc)
                return

    async def _hang_up(self, code: int, reason: str) -> None:
        self.hang_up_soon(code, reason)
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=5.0)

    async def _cleanup(self) -> None:
        """The connection is over: every stream it opened closes now (queued audio is discarded)."""
        self.door.connections.discard(self)
        if self._pinger is not None:
            self._pinger.cancel()
        running = list(self.streams.values())
        self.streams.clear()
        for feeder in [*running, *self._finishing]:
            feeder.stopping = True
            feeder.abandon()
        for feeder in running:
            await self._close_stream(feeder, DISCONNECTED)
        if self._tasks:  # stops in progress close their own streams
            await asyncio.wait(set(self._tasks))
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > REMEMBERED_SIDS:
        memory.popitem(last=False)


class WebSocketDoor:
    """What the door's connections share: which connection owns which stream (so the registry's stop
    listener answers the right client) and the open connections (hung up at shutdown)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.connections: set[Connection] = set()
        self._owners: dict[str, tuple[Connection, StreamFeeder]] = {}

    def own(self, connection: Connection, feeder: StreamFeeder) -> None:
        self._owners[feeder.uuid] = (connection, feeder)

    async def on_stop(self, session: StreamSession, reason: str) -> None:
        """The registry's stop listener: whoever closed the stream, its connection hears of it."""
        owner = self._owners.get(session.uuid)
        if owner is None or owner[1].session is not session:
            return
        del self._owners[session.uuid]
        connection, feeder = owner
        connection.stream_closed(feeder, reason)

    async def record_error(
        self, status: int, detail: str, *, stream_uuid: str | None = None, **fields: Any
    ) -> None:
        """An ``error`` event, as the REST API records every refusal (an unwritable log is only logged)."""
        try:
            await events.record(
                self.runtime.store.sessions,
                events.ERROR,
                str(status),
                stream_uuid=stream_uuid,
                method="WEBSOCKET",
                detail=detail,
                **fields,
            )
        except Exception:
            log.exception("could not record an error event")

    def hang_up_all(self) -> None:
        for connection in list(self.connections):
            connection.hang_up_soon(1001, "voxgate is shutting down")
