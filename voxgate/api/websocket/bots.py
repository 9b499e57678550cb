"""The bot side of a WebSocket connection: a voice bot's JSON activities in, its events out, on the
connection that carries the call's audio (Twilio media frames).

An activity names its stream with ``streamSid`` (voxgate's addition; optional while the connection
carries one stream). Before an enroll, a verify or an end of utterance, the stream's frames received so
far are handed over first: the bot's message comes after the audio it is about. Every event to the bot
is one text frame, the reference's JSON plus the ``streamSid`` it is about (when it is about one).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from voxgate.api.websocket import protocol as wire
from voxgate.service.bots import ActivityError, BotSession, parse
from voxgate.service.bots import activities as act
from voxgate.streams import StreamSession

if TYPE_CHECKING:
    from voxgate.api.websocket.connection import Connection, StreamFeeder

AFTER_AUDIO = frozenset({act.ENROLL, act.VERIFY, act.END_OF_UTTERANCE})  # need the frames before them


class BotChannel:
    """One connection's bot session (made on the first activity)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._session: BotSession | None = None
        self._sids: dict[str, str] = {}  # stream uuid → streamSid, of the streams its activities named

    async def handle(self, message: wire.BotMessage) -> None:
        bots = self.connection.runtime.bots
        if bots is None:
            await self._refuse(
                wire.CONNECTION_ERROR, "bot operations are not running (starting or stopping)", None
            )
            return
        if not await self.connection.token_valid():
            detail = "the connection's token was revoked or has expired: reconnect with a valid token"
            await self._refuse(wire.UNAUTHORIZED, detail, None)
            return
        if self._session is None:
            self._session = BotSession(bots, self._send_later)
        try:
            activities = parse(message.raw)
        except ActivityError as exc:
            await self._refuse(wire.BAD_REQUEST, f"Validation error: {exc.message}", None)
            return
        for activity in activities:
            feeder, problem = self._stream_of(activity)
            if problem is not None:
                await self._refuse(
                    wire.NOT_FOUND if activity.stream_sid else wire.BAD_REQUEST, problem, activity
                )
                continue
            if feeder is not None:
                self._sids[feeder.uuid] = feeder.sid
                if activity.name in AFTER_AUDIO:
                    await feeder.drain()
            try:
                answers = await self._session.handle(activity, feeder.session if feeder is not None else None)
            except ActivityError as exc:
                await self._refuse(wire.BAD_REQUEST, f"Validation error: {exc.message}", activity)
                continue
            for answer in answers:
                self._send(answer, feeder.sid if feeder is not None else activity.stream_sid)

    def _stream_of(self, activity: act.Activity) -> tuple[StreamFeeder | None, str | None]:
        """The stream an activity is about: the one it names, else the connection's only one."""
        streams = self.connection.streams
        if activity.stream_sid is not None:
            feeder = streams.get(activity.stream_sid)
            if feeder is None and activity.name in AFTER_AUDIO:
                return None, f"no running stream {activity.stream_sid!r} on this connection"
            return feeder, None
        if len(streams) > 1 and activity.name in AFTER_AUDIO:
            return None, f"{len(streams)} streams run on this connection: name one with streamSid"
        return (next(iter(streams.values())) if streams else None), None

    def _sid_of(self, stream: StreamSession | None) -> str | None:
        """The streamSid an event is about (remembered: the stream may have stopped since)."""
        return None if stream is None else self._sids.get(stream.uuid)

    async def _send_later(self, event: act.Event, stream: StreamSession | None) -> None:
        self._send(event, self._sid_of(stream))

    def _send(self, event: act.Event, sid: str | None) -> None:
        self.connection.send_text(
            json.dumps({**event, "streamSid": sid} if sid else event, separators=(",", ":"))
        )

    async def _refuse(self, status: int, detail: str, activity: act.Activity | None) -> None:
        event = activity.name if activity is not None else "activity"
        sid = activity.stream_sid if activity is not None else None
        await self.connection.refuse(
            wire.StreamReply.of(
                status, event, sid, None, msg=detail if status == wire.BAD_REQUEST else None, detail=detail
            )
        )
