"""Bot sessions: one bot's conversation on a call, whichever door its activities come through.

A :class:`BotSession` holds what a bot set with ``config`` events and where its later events go (its
*outlet*: the WebSocket that carries the call, or a :class:`Mailbox` for REST, polled and pushed to a
webhook). :meth:`BotSession.handle` takes one activity and returns the events it answers at once (status,
delete, an operation refused); a running enroll or verify sends its progress and completed events to the
outlet later. ``sendEventsToBot``, when set, filters them all.

:class:`BotSessions` (one per runtime) holds the running operations, one per stream at most, and the REST
mailboxes; a stream that closes ends its operation (``success: false``, "the call ended").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from voxgate.service.bots import activities as act
from voxgate.service.bots import operations as ops
from voxgate.service.bots.config import BadParameter, ConfigSet, Kind, check_session_params, plan, send_events
from voxgate.service.webhooks import Delivery, check_target, check_url, encode
from voxgate.store import subscriptions
from voxgate.streams import StreamSession

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

Outlet = Callable[[act.Event, StreamSession | None], Awaitable[None]]  # an event, and the stream it is about
KINDS: dict[str, Kind] = {
    act.GET_SPEAKER_STATUS: "status",
    act.ENROLL: "enroll",
    act.VERIFY: "verify",
    act.DELETE_SPEAKER: "delete",
}
MAILBOX_EVENTS = 256  # events a REST session keeps for polling
STOP_WAIT_S = 2.0


class BotSession:
    """One bot on one call (a WebSocket connection, or a stream's REST mailbox)."""

    def __init__(self, bots: BotSessions, outlet: Outlet) -> None:
        self.bots = bots
        self.outlet = outlet
        self.params: dict[str, Any] = {}  # from config events

    def layers(
        self, stream: StreamSession | None, activity: act.Activity | None = None
    ) -> list[Mapping[str, Any]]:
        """Parameter layers, the later winning: the stream's info, the bot's config, the activity."""
        found: list[Mapping[str, Any]] = [stream.info] if stream is not None else []
        found.append(self.params)
        if activity is not None:
            found.append(activity.params)
        return found

    async def handle(self, activity: act.Activity, stream: StreamSession | None) -> list[act.Event]:
        """One activity; the events that answer it now (filtered by ``sendEventsToBot``).
        ActivityError: a ``config`` whose parameters cannot be used."""
        if activity.name == act.CONFIG:
            try:
                check_session_params(activity.params)
            except BadParameter as exc:
                raise act.ActivityError(f"config: {exc.message}") from None
            self.params.update(activity.params)
            return []
        if activity.name == act.END_OF_UTTERANCE:
            running = self.bots.operation(stream)
            if running is not None:
                await running.end_of_utterance()
            return []
        answers = await self._answer(KINDS[activity.name], activity, stream)
        return [e for e in answers if self.wanted(e, stream)]

    async def _answer(
        self, kind: Kind, activity: act.Activity, stream: StreamSession | None
    ) -> list[act.Event]:
        runtime = self.bots.runtime
        layers = self.layers(stream, activity)
        try:
            speaker = plan("status", layers, self.bots.sets, runtime.settings)
        except BadParameter as exc:
            return [_refused(kind, exc.message)]
        if kind == "status":
            return [await ops.speaker_status(runtime, speaker)]
        if kind == "delete":
            return [await ops.delete_speaker(runtime, speaker)]
        if stream is None or stream.closed:
            return [
                ops.failed(kind, "no live audio stream for this operation: start the call's stream first")
            ]
        running = self.bots.operation(stream)
        if running is not None:
            return [
                ops.failed(
                    kind, f"a {running.kind} is already running on this call; wait for its completed event"
                )
            ]
        stored = await ops.find_speaker(runtime, speaker)
        try:
            chosen = plan(
                kind, layers, self.bots.sets, runtime.settings, ops.stored_mode(stored) if stored else None
            )
        except BadParameter as exc:
            return [ops.failed(kind, exc.message)]
        problem = ops.voiceprint_problem(chosen, stored)
        if problem is not None:
            return [ops.failed(kind, problem)]
        operation = ops.Operation(runtime, chosen, stream, lambda e: self.emit(e, stream), stored)
        await self.bots.start(operation)
        return []

    def wanted(self, event: act.Event, stream: StreamSession | None) -> bool:
        try:
            names = send_events(self.layers(stream))
        except BadParameter:
            names = None
        return names is None or str(event["name"]).lower() in names

    async def emit(self, event: act.Event, stream: StreamSession | None) -> None:
        """A later event (an operation's progress or completion) to the outlet; never raises."""
        if not self.wanted(event, stream):
            return
        try:
            await self.outlet(event, stream)
        except Exception:
            log.exception("a bot event could not be handed to its door")


def _refused(kind: Kind, reason: str) -> act.Event:
    """The answer of an operation whose parameters cannot be used."""
    if kind == "status":
        return act.event(
            act.SPEAKER_STATUS, {"success": False, "enrolled": False, "rawResult": {}, "reasonText": reason}
        )
    if kind == "delete":
        return act.event(act.ACTION_RESULT, {"success": False, "rawResult": {}, "reasonText": reason})
    return ops.failed(kind, reason)


class Mailbox:
    """A REST bot session's later events: kept for polling (``after`` a sequence number) and, when the
    bot gave a webhook, sent there signed like every voxgate callback."""

    def __init__(self, bots: BotSessions, stream_uuid: str) -> None:
        self.stream_uuid = stream_uuid
        self.session = BotSession(bots, self.put)
        self.last = 0
        self.webhook: str | None = None
        self._secret = ""
        self._events: deque[tuple[int, act.Event]] = deque(maxlen=MAILBOX_EVENTS)
        self._runtime = bots.runtime

    def set_webhook(self, url: str | None) -> str | None:
        """Send later events to ``url`` (None: stop); returns its new signing secret. ValueError or
        TargetNotAllowed for a URL callbacks may not go to."""
        if url is None:
            self.webhook, self._secret = None, ""
            return None
        check_target(check_url(url), self._runtime.settings.webhook_allowed_networks)
        self.webhook, self._secret = url, subscriptions.new_secret()
        return self._secret

    async def put(self, event: act.Event, stream: StreamSession | None = None) -> None:
        self.last += 1
        self._events.append((self.last, event))
        webhooks = self._runtime.webhooks
        if self.webhook is not None and webhooks is not None:
            body = encode({**event, "uuid": self.stream_uuid, "sequence": self.last})
            webhooks.sender.submit(
                Delivery(f"bot-{self.stream_uuid}", "bot", self.webhook, self._secret, body, self.stream_uuid)
            )

    def after(self, sequence: int) -> list[act.Event]:
        return [e for n, e in self._events if n > sequence]


class BotSessions:
    """The running operations (one per stream) and the REST mailboxes of one runtime."""

    def __init__(self, runtime: Runtime, sets: Mapping[str, ConfigSet]) -> None:
        self.runtime = runtime
        self.sets = dict(sets)
        self._operations: dict[str, ops.Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._mailboxes: dict[str, Mailbox] = {}

    def operation(self, stream: StreamSession | None) -> ops.Operation | None:
        """The enroll or verify running on this stream, if any."""
        if stream is None:
            return None
        running = self._operations.get(stream.uuid)
        return running if running is not None and not running.done else None

    async def start(self, operation: ops.Operation) -> None:
        self._operations[operation.stream.uuid] = operation  # before any await: one per stream
        try:
            await operation.begin()
        except BaseException:
            self._operations.pop(operation.stream.uuid, None)
            raise
        task = asyncio.create_task(operation.run(), name=f"bot-{operation.kind}-{operation.stream.uuid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def mailbox(self, stream: StreamSession) -> Mailbox:
        """The REST session of a live stream (made on first use; it ends with the stream)."""
        box = self._mailboxes.get(stream.uuid)
        if box is None:
            box = self._mailboxes[stream.uuid] = Mailbox(self, stream.uuid)
        return box

    def find_mailbox(self, stream_uuid: str) -> Mailbox | None:
        return self._mailboxes.get(stream_uuid)

    async def stream_stopped(self, stream: StreamSession, reason: str) -> None:
        """The registry's stop listener: the stream's operation ends, its mailbox goes."""
        running = self.operation(stream)
        if running is not None:
            running.stop(f"the call ended ({reason})")
        self._operations.pop(stream.uuid, None)
        box = self._mailboxes.get(stream.uuid)
        if box is not None:
            # its last events (the operation's completion) may still be fetched for a moment
            asyncio.get_running_loop().call_later(30.0, self._mailboxes.pop, stream.uuid, None)

    async def stop(self) -> None:
        """Server shutdown: every running operation ends with a completed event."""
        for running in list(self._operations.values()):
            running.stop("voxgate is shutting down")
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), STOP_WAIT_S)
        self._operations.clear()
        self._mailboxes.clear()
