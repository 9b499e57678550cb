"""Enroll and verify on a live stream: the one copy of the logic behind ``POST /api/v2/enroll``,
``POST /api/v2/verify`` and the enroll/verify webhooks.

No FastAPI here: each caller turns an outcome into its own answer (an HTTP response or error, a callback
payload). Every call records its event (as the HTTP endpoints always did) unless the caller records it
itself (the webhook ticker records only changes, see :mod:`voxgate.api.webhooks`).

Outcomes and the HTTP status Voice Verify gives them (also the ``status`` of a callback):

- enroll: ``not_enough_speech`` 200, ``created`` 201, ``exists`` 409 (also while there is not enough speech
  yet, so a caller learns it early);
- verify: ``verified`` / ``not_sure`` / ``not_verified`` 200 with a score, ``not_enough_speech`` 200 without,
  ``voiceprint_not_found`` 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.api.state import Services
from voxgate.biometrics.models import MODEL_IDS
from voxgate.biometrics.profile import Verdict
from voxgate.biometrics.voiceprint import Voiceprint
from voxgate.errors import InsufficientSpeech, VoiceprintExists, VoiceprintNotFound
from voxgate.store import events, profiles, voiceprints
from voxgate.streams import StreamSession

Sessions = async_sessionmaker[AsyncSession]

NOT_ENOUGH_SPEECH: Final = "not_enough_speech"
EXISTS: Final = "exists"
VOICEPRINT_NOT_FOUND: Final = "voiceprint_not_found"

# Voice Verify's words for each outcome (the `detail` of enroll, the `result` of a verify callback)
ENROLL_NOT_ENOUGH = "there is not enough net speech to create the enrollment yet"
ENROLL_CREATED = "enrollment created successfully"
ENROLL_EXISTS = "enrollment with this external_id already exists"
VERIFY_NOT_ENOUGH = "there is not enough net speech to make the verification yet"
VERIFY_NO_VOICEPRINT = "voiceprint with external_id does not exist"

EnrollResult = Literal["created", "not_enough_speech", "exists"]
VerifyResult = Literal["verified", "not_sure", "not_verified", "not_enough_speech", "voiceprint_not_found"]
VERDICTS: dict[Verdict, VerifyResult] = {
    Verdict.VERIFIED: "verified",
    Verdict.NOT_SURE: "not_sure",
    Verdict.NOT_VERIFIED: "not_verified",
}


@dataclass(frozen=True)
class EnrollOutcome:
    result: EnrollResult
    detail: str  # Voice Verify's words
    status: int  # 200 not enough speech, 201 created, 409 exists
    stream_uuid: str
    external_id: str
    speech_s: float  # net speech that was, or would be, enrolled
    required_s: float
    model: str | None = None  # the models of the stored voiceprint (created only)
    message: str = ""  # why, for an error answer (409)


@dataclass(frozen=True)
class VerifyOutcome:
    result: VerifyResult
    detail: str  # Voice Verify's words
    status: int  # 200, or 404 when the voiceprint does not exist
    stream_uuid: str
    external_id: str
    speech_s: float  # net speech the score is (or would be) based on
    required_s: float
    score: float | None = None  # calibrated LLR, when there is a verdict
    profile: str | None = None
    profile_hash: str | None = None
    message: str = ""  # why, for an error answer (404)


def model_name(voiceprint: Voiceprint) -> str:
    """The models a voiceprint holds, known ones in their usual order: ``ecapa+campplus``."""
    return "+".join(
        [m for m in MODEL_IDS if m in voiceprint.embeddings]
        + [m for m in voiceprint.model_ids if m not in MODEL_IDS]
    )


async def voiceprint_exists(sessions: Sessions, external_id: str) -> bool:
    try:
        await voiceprints.get(sessions, external_id)
    except VoiceprintNotFound:
        return False
    return True


# -- enroll --------------------------------------------------------------------------------------------


async def enroll_stream(
    services: Services, stream: StreamSession, external_id: str, *, record: bool = True
) -> EnrollOutcome:
    """Store the stream's voiceprint under ``external_id`` once it holds enough net speech."""
    sessions = services.store.sessions
    required_s = services.settings.min_enroll_speech_s

    def outcome(
        result: EnrollResult, speech_s: float, model: str | None = None, message: str = ""
    ) -> EnrollOutcome:
        detail, status = {
            "created": (ENROLL_CREATED, 201),
            "not_enough_speech": (ENROLL_NOT_ENOUGH, 200),
            "exists": (ENROLL_EXISTS, 409),
        }[result]
        return EnrollOutcome(
            result, detail, status, stream.uuid, external_id, speech_s, required_s, model, message
        )

    try:
        voiceprint = stream.voiceprint(required_s, "an enrollment")
    except InsufficientSpeech as exc:
        if await voiceprint_exists(sessions, external_id):
            done = outcome("exists", exc.speech_s, message=f"{ENROLL_EXISTS} ({external_id!r})")
        else:
            done = outcome("not_enough_speech", exc.speech_s)
    else:
        source = {
            "type": "stream",
            "stream_uuid": stream.uuid,
            "stream_type": stream.type.value,
            "sample_rate_hz": stream.sample_rate_hz,
        }
        try:
            await voiceprints.add(sessions, external_id, voiceprint, source)
        except VoiceprintExists as exc:
            done = outcome("exists", voiceprint.speech_s, message=exc.message)
        else:
            done = outcome("created", voiceprint.speech_s, model=model_name(voiceprint))
    if record:
        await record_enroll(sessions, done)
    return done


async def record_enroll(sessions: Sessions, outcome: EnrollOutcome, **extra: Any) -> None:
    """The ``enroll`` event of an outcome (``extra`` goes into its detail)."""
    if outcome.model is not None:
        extra["model"] = outcome.model
    await events.record(
        sessions,
        events.ENROLL,
        events.CREATED if outcome.result == "created" else outcome.result,
        stream_uuid=outcome.stream_uuid,
        external_id=outcome.external_id,
        speech_s=outcome.speech_s,
        **extra,
    )


# -- verify --------------------------------------------------------------------------------------------


async def verify_stream(
    services: Services, stream: StreamSession, external_id: str, *, record: bool = True
) -> VerifyOutcome:
    """Score the stream's voiceprint so far against the stored one with the active calibration profile.

    Calibration problems (ProfileError, ModelMismatch) are raised, not turned into an outcome.
    """
    sessions = services.store.sessions
    required_s = services.settings.min_verify_speech_s
    try:
        stored = await voiceprints.get(sessions, external_id)
    except VoiceprintNotFound as exc:
        done = VerifyOutcome(
            VOICEPRINT_NOT_FOUND,
            VERIFY_NO_VOICEPRINT,
            404,
            stream.uuid,
            external_id,
            stream.speech_s,
            required_s,
            message=exc.message,
        )
    else:
        try:
            test = stream.voiceprint(required_s, "a verification")
        except InsufficientSpeech as exc:
            done = VerifyOutcome(
                NOT_ENOUGH_SPEECH, VERIFY_NOT_ENOUGH, 200, stream.uuid, external_id, exc.speech_s, required_s
            )
        else:
            profile = await profiles.active_profile(
                sessions, stream.sample_rate_hz, services.settings.profile
            )
            scored = profile.score(stored.voiceprint, test)
            done = VerifyOutcome(
                VERDICTS[scored.verdict],
                scored.verdict.value.replace("_", " "),
                200,
                stream.uuid,
                external_id,
                test.speech_s,
                required_s,
                score=scored.llr,
                profile=profile.name,
                profile_hash=profile.content_hash,
            )
            stream.last_verdict, stream.last_score = scored.verdict.value, round(scored.llr, 4)
    if record:
        await record_verify(sessions, done)
    return done


async def record_verify(sessions: Sessions, outcome: VerifyOutcome, **extra: Any) -> None:
    """The ``verify`` event of an outcome (``extra`` goes into its detail). Written behind (group
    commit): a poll twice a second per stream must not wait for the store."""
    if outcome.result != VOICEPRINT_NOT_FOUND:
        extra["speech_s"] = outcome.speech_s
    if outcome.score is not None:
        extra.update(llr=outcome.score, profile=outcome.profile, profile_hash=outcome.profile_hash)
    events.record_soon(
        sessions,
        events.VERIFY,
        outcome.result,
        stream_uuid=outcome.stream_uuid,
        external_id=outcome.external_id,
        **extra,
    )
