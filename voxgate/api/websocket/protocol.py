"""Voice Verify's WebSocket protocol, which is Twilio Media Streams' wire format: typed messages in and out.

Client → voxgate, one JSON object per text frame, told apart by ``event``::

    connected  {"event": "connected", "protocol": "Call", "version": "1.0.0"}        once, first
    start      {"event": "start", "start": {"streamSid": ..., "tracks": [...], "mediaFormat": {...},
                "customParameters": {"uuid": "<uuid4>", ...}}, "streamSid": ...}
    media      {"event": "media", "media": {"track": "inbound", "payload": "<base64 µ-law>"}, "streamSid": ...}
    stop       {"event": "stop", "stop": {"accountSid": "", "callSid": ""}, "streamSid": ...}
    anything else (Twilio's mark and dtmf, Telnyx's clear, ...) parses as :class:`OtherEvent`: ignored

Unknown fields are kept (``extra="allow"``), so every message re-encodes whole. Telnyx's spelling
(``stream_id``, ``sequence_number``, ``custom_parameters``, ``media_format``, ``sample_rate``, ``PCMU``)
is read too. Replies use the Voice Verify guide's words exactly (:data:`MESSAGES`).

Nothing here knows about sockets or streams: :mod:`voxgate.api.websocket.connection` does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid as uuid_module
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from voxgate.errors import VoxgateError
from voxgate.service.bots import is_activity_message

PROTOCOL_VERSION = "1.0.0"  # the only version Voice Verify (and so voxgate) accepts
SAMPLE_RATE_HZ = 8000
INBOUND = "inbound"

# -- replies: status codes and their messages, word for word from the Voice Verify guide -----------------

CONNECTED = 200
PING_STATUS = 100
STARTED = 201
STOPPED = 204
BAD_REQUEST = 400  # not in the guide: a message that breaks the protocol (its "Validation Scheme Exception")
UNAUTHORIZED = 401  # not in the guide: the connection's token was revoked or expired since it connected
FORBIDDEN = 403  # the guide's licensing refusal; voxgate has no licence, so it never sends it
NOT_FOUND = 404
TIMEOUT = 408
EXISTS = 409
UNSUPPORTED_MEDIA = 415  # not in the guide: a mediaFormat other than G.711 at 8 kHz, mono
MAINTENANCE = 423
INTERNAL_ERROR = 500
CONNECTION_ERROR = 502
UNAVAILABLE = 503

MESSAGES: dict[int, str] = {
    STARTED: "Stream started.",
    STOPPED: "Stream stopped.",
    UNAUTHORIZED: "Unauthorized.",
    FORBIDDEN: "Resource is unavailable.",
    NOT_FOUND: "Stream not found.",
    TIMEOUT: "Request timeout.",
    EXISTS: "Stream already exists.",
    MAINTENANCE: "Maintenance mode set.",
    INTERNAL_ERROR: "Internal server error.",
    CONNECTION_ERROR: "Connection error.",
    UNAVAILABLE: "Resource is unavailable.",
}
CONNECTED_MSG = "Connection established."
PING_MSG = "Ping."

# -- ids ------------------------------------------------------------------------------------------------

# Voice Verify: empty or 34 characters [a-zA-Z0-9] (Twilio's AC.../MZ.../CA... sids). SignalWire's sids and
# Telnyx's stream_id are UUIDs, so a UUID passes too: a real SignalWire or Telnyx stream must work unchanged.
_TWILIO_SID = r"[A-Za-z0-9]{34}"
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
SID_PATTERN = rf"^(?:{_TWILIO_SID}|{_UUID})?$"
SID_RULE = "must be empty, 34 characters of [a-zA-Z0-9], or a UUID"
Sid = Annotated[str, StringConstraints(pattern=SID_PATTERN)]

# a field and where Telnyx puts it
_STREAM_SID = AliasChoices("streamSid", "stream_id")
_SEQUENCE = AliasChoices("sequenceNumber", "sequence_number")
Counter = str | int | None  # Twilio sends numbers as strings; some clients send numbers


class ProtocolError(VoxgateError):
    """A message voxgate cannot act on; answered with ``status`` (400 or 415) and the connection stays up."""

    def __init__(
        self, message: str, *, status: int = BAD_REQUEST, event: str | None = None, sid: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.event = event
        self.sid = sid


class Encoding(StrEnum):
    MULAW = "mulaw"
    ALAW = "alaw"


# mediaFormat.encoding (lower case) -> G.711 law; Twilio/Voice Verify name it audio/x-mulaw, Telnyx PCMU
ENCODINGS: dict[str, Encoding] = {
    "audio/x-mulaw": Encoding.MULAW,
    "audio/pcmu": Encoding.MULAW,
    "pcmu": Encoding.MULAW,
    "audio/x-alaw": Encoding.ALAW,
    "audio/pcma": Encoding.ALAW,
    "pcma": Encoding.ALAW,
}


def track_name(track: str) -> str:
    """``inbound_track`` (SignalWire, Twilio's dtmf) and ``inbound`` name the same track."""
    return track.removesuffix("_track")


# -- client → voxgate -----------------------------------------------------------------------------------


class WireModel(BaseModel):
    """Base of the wire messages: unknown fields are kept, so nothing a client sends is silently dropped."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def encode(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Connected(WireModel):
    event: Literal["connected"] = "connected"
    protocol: str | None = None  # "Call"; Telnyx leaves it out
    version: str | None = None


class MediaFormat(WireModel):
    encoding: str = "audio/x-mulaw"
    sample_rate: int | float = Field(
        default=SAMPLE_RATE_HZ, alias="sampleRate", validation_alias=AliasChoices("sampleRate", "sample_rate")
    )
    channels: int = 1

    def checked(self) -> Encoding:
        """The G.711 law of this format; ProtocolError (415) for anything else voxgate cannot decode."""
        law = ENCODINGS.get(self.encoding.lower())
        if law is None or self.sample_rate != SAMPLE_RATE_HZ or self.channels != 1:
            raise ProtocolError(
                f"Unsupported media format: {self.encoding}, {self.sample_rate} Hz, {self.channels} "
                "channel(s); send audio/x-mulaw (or audio/x-alaw), 8000 Hz, 1 channel.",
                status=UNSUPPORTED_MEDIA,
                event="start",
            )
        return law


class StartMetadata(WireModel):
    account_sid: Sid | None = Field(default=None, alias="accountSid")
    stream_sid: Sid | None = Field(default=None, alias="streamSid")
    call_sid: Sid | None = Field(default=None, alias="callSid")
    tracks: list[str] | None = None
    media_format: MediaFormat | None = Field(
        default=None, alias="mediaFormat", validation_alias=AliasChoices("mediaFormat", "media_format")
    )
    custom_parameters: dict[str, Any] | None = Field(
        default=None,
        alias="customParameters",
        validation_alias=AliasChoices("customParameters", "custom_parameters"),
    )


class Start(WireModel):
    event: Literal["start"] = "start"
    sequence_number: Counter = Field(default=None, alias="sequenceNumber", validation_alias=_SEQUENCE)
    start: StartMetadata
    stream_sid: Sid | None = Field(default=None, alias="streamSid", validation_alias=_STREAM_SID)

    @model_validator(mode="after")
    def _one_stream_sid(self) -> Start:
        inner = self.start.stream_sid
        if self.stream_sid and inner and inner != self.stream_sid:
            raise ValueError(f"start.streamSid ({inner}) differs from streamSid ({self.stream_sid})")
        return self

    @property
    def sid(self) -> str:
        """The stream's key on its connection (empty when the client sends none: one such stream)."""
        return self.stream_sid or self.start.stream_sid or ""


class MediaChunk(WireModel):
    track: str | None = None
    chunk: Counter = None
    timestamp: Counter = None
    payload: str

    @field_validator("payload")
    @classmethod
    def _base64(cls, payload: str) -> str:
        _codes(payload)
        return payload

    @cached_property
    def codes(self) -> bytes:
        """The G.711 codes the payload carries (one byte per sample)."""
        return _codes(self.payload)


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _codes(payload: str) -> bytes:
    """Canonical base64 only (what Twilio and every platform send): a length that is a multiple of 4, the
    standard alphabet, at most two '=' at the end, and the bytes re-encode to the same text. Python's
    decoder alone accepts excess padding (``YWJj=``)."""
    if len(payload) % 4 or not _BASE64.fullmatch(payload):
        raise ValueError("not valid base64 (standard alphabet, padded to a multiple of 4 characters)")
    try:
        codes = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if base64.b64encode(codes).decode("ascii") != payload:
        raise ValueError("not canonical base64 (bits after the last byte are set)")
    return codes


class Media(WireModel):
    event: Literal["media"] = "media"
    sequence_number: Counter = Field(default=None, alias="sequenceNumber", validation_alias=_SEQUENCE)
    media: MediaChunk
    stream_sid: Sid | None = Field(default=None, alias="streamSid", validation_alias=_STREAM_SID)

    @property
    def sid(self) -> str:
        return self.stream_sid or ""


class StopMetadata(WireModel):
    account_sid: Sid | None = Field(default=None, alias="accountSid")
    call_sid: Sid | None = Field(default=None, alias="callSid")


class Stop(WireModel):
    event: Literal["stop"] = "stop"
    sequence_number: Counter = Field(default=None, alias="sequenceNumber", validation_alias=_SEQUENCE)
    stop: StopMetadata | None = None
    stream_sid: Sid | None = Field(default=None, alias="streamSid", validation_alias=_STREAM_SID)

    @property
    def sid(self) -> str:
        return self.stream_sid or ""


class OtherEvent(WireModel):
    """Any other event (``mark``, ``dtmf``, ``clear``...): tolerated and ignored."""

    event: str


@dataclass(frozen=True)
class BotMessage:
    """A voice bot's JSON activity on the call's connection (``type``/``name``/``activityParams``, no
    ``event``): read by :mod:`voxgate.service.bots.activities`."""

    raw: dict[str, Any]

    def encode(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"))


Incoming = Connected | Start | Media | Stop | OtherEvent | BotMessage
_MODELS: dict[str, type[Connected | Start | Media | Stop]] = {
    "connected": Connected,
    "start": Start,
    "media": Media,
    "stop": Stop,
}


def decode(data: str | bytes | None) -> Incoming:
    """One text frame → a typed message; ProtocolError (naming the field) for anything else."""
    if not isinstance(data, str):
        raise ProtocolError("Validation error: messages are JSON text frames, not binary ones.")
    try:
        raw = json.loads(data)
    except RecursionError:
        raise ProtocolError("Validation error: the message nests too deeply.") from None
    except ValueError as exc:
        raise ProtocolError(f"Validation error: the message is not JSON ({exc}).") from None
    if not isinstance(raw, dict):
        raise ProtocolError("Validation error: a message is a JSON object.")
    if is_activity_message(raw):
        return BotMessage(raw)
    event = raw.get("event")
    sid = raw.get("streamSid", raw.get("stream_id"))
    sid = sid if isinstance(sid, str) else None
    if not isinstance(event, str):
        raise ProtocolError("Validation error: event is missing (a string).", sid=sid)
    model = _MODELS.get(event)
    try:
        return model.model_validate(raw) if model is not None else OtherEvent.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(f"Validation error: {_describe(exc)}.", event=event, sid=sid) from None
    except RecursionError:
        raise ProtocolError("Validation error: the message nests too deeply.", event=event, sid=sid) from None


def _describe(exc: ValidationError) -> str:
    """The first problem of a validation error, naming the field as the client spelt it."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    if error["type"] == "string_pattern_mismatch":
        return f"{path} {SID_RULE}, got {str(error['input'])[:64]!r}"
    if error["type"] == "missing":
        return f"{path} is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


# -- a start, checked: what the door needs to open the stream ------------------------------------------

# the HTTP door's limits on stream info (voxgate.api.routers.streams; not imported: that package imports us)
MAX_INFO_KEYS = 64
_INFO = TypeAdapter(
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=128)],
        Annotated[str, StringConstraints(max_length=1024)]
        | bool
        | int
        | Annotated[float, Field(allow_inf_nan=False)],
    ]
)


@dataclass(frozen=True)
class StreamRequest:
    sid: str
    uuid: str  # canonical form
    info: dict[str, str | bool | int | float]  # customParameters without the uuid
    encoding: Encoding
    track: str  # the track fed to the stream: inbound, unless the client streams only another one


def stream_request(message: Start) -> StreamRequest:
    """Check a start's customParameters and mediaFormat; ProtocolError (400/415) names what is wrong."""
    sid = message.sid
    parameters = dict(message.start.custom_parameters or {})
    raw_uuid = parameters.pop("uuid", None)
    if raw_uuid is None or raw_uuid == "":
        raise ProtocolError(
            "Validation error: start.customParameters.uuid is required (the stream's UUID4).",
            event="start",
            sid=sid,
        )
    stream_uuid = _uuid4(raw_uuid)
    if stream_uuid is None:
        raise ProtocolError(
            f"Validation error: start.customParameters.uuid must be a UUID4, got {str(raw_uuid)[:64]!r}.",
            event="start",
            sid=sid,
        )
    if len(parameters) > MAX_INFO_KEYS:
        raise ProtocolError(
            f"Validation error: start.customParameters holds {len(parameters)} keys besides uuid, "
            f"at most {MAX_INFO_KEYS}.",
            event="start",
            sid=sid,
        )
    try:
        info = _INFO.validate_python(parameters)
    except ValidationError as exc:
        key = str(exc.errors(include_url=False)[0]["loc"][0])
        raise ProtocolError(
            f"Validation error: start.customParameters.{key[:128]} must be a string (at most 1024 "
            "characters), a number or a boolean, under a key of 1 to 128 characters.",
            event="start",
            sid=sid,
        ) from None
    media_format = message.start.media_format or MediaFormat()
    try:
        encoding = media_format.checked()
    except ProtocolError as exc:
        exc.sid = sid
        raise
    tracks = [track_name(t) for t in message.start.tracks or []]
    track = INBOUND if not tracks or INBOUND in tracks else tracks[0]
    return StreamRequest(sid=sid, uuid=stream_uuid, info=info, encoding=encoding, track=track)


def _uuid4(value: object) -> str | None:
    """The canonical text of a version-4 (RFC 4122) UUID, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        return None
    if parsed.variant != uuid_module.RFC_4122 or parsed.version != 4:
        return None
    return str(parsed)


# -- voxgate → client -----------------------------------------------------------------------------------


class ConnectedReply(WireModel):
    version: str | None = PROTOCOL_VERSION
    event: Literal["connected"] = "connected"
    msg: str = CONNECTED_MSG
    status: int = CONNECTED


class Ping(WireModel):
    event: Literal["ping"] = "ping"
    msg: str = PING_MSG
    status: int = PING_STATUS


class StreamReply(WireModel):
    """The answer about one stream (started, stopped, timed out, refused). ``retries`` comes only with
    201, as in the guide; ``detail`` (voxgate's own field) says more than the guide's fixed ``msg``."""

    id: str | None
    uuid: str | None
    retries: int | None = None
    event: str
    msg: str
    status: int
    detail: str | None = None

    @classmethod
    def of(
        cls,
        status: int,
        event: str,
        sid: str | None,
        stream_uuid: str | None,
        *,
        msg: str | None = None,
        detail: str | None = None,
    ) -> StreamReply:
        return cls(
            id=sid,
            uuid=stream_uuid,
            retries=0 if status == STARTED else None,
            event=event,
            msg=msg or MESSAGES[status],
            status=status,
            detail=detail,
        )

    def encode(self) -> str:
        reply = self.model_dump(exclude_none=True)
        reply["id"], reply["uuid"] = self.id, self.uuid  # always present, null when unknown
        order = ("id", "uuid", "retries", "event", "msg", "status", "detail")
        return json.dumps({key: reply[key] for key in order if key in reply}, separators=(",", ":"))


PING_TEXT = Ping().model_dump_json()
