"""Verification on a live stream: the one copy behind ``POST /api/v2/verify`` and the verify webhook.

The stream's voiceprint so far is scored against the stored one with the active calibration profile: a
dot product and a calibration, never a forward pass, so it is cheap enough to poll twice a second. Only
speech that has not filled a chunk yet and after which the speaker paused (the settled tail) is embedded
first, once: a poll with no new settled tail costs no forward pass.
Outcomes carry Voice Verify's words, never an HTTP status.

Outcomes: ``verified`` / ``not_sure`` / ``not_verified`` with a score, ``not_enough_speech`` without one,
``voiceprint_not_found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from voxgate.biometrics.profile import Verdict, channel_for_rate
from voxgate.errors import InsufficientSpeech, VoiceprintNotFound
from voxgate.service import metrics
from voxgate.service.enrollment import is_text_dependent
from voxgate.store import events, profiles, voiceprints
from voxgate.store.db import DbSessions
from voxgate.streams import StreamSession

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

NOT_ENOUGH_SPEECH: Final = "not_enough_speech"
VOICEPRINT_NOT_FOUND: Final = "voiceprint_not_found"

# Voice Verify's words for the outcomes without a verdict (the `result` of a verify callback)
VERIFY_NOT_ENOUGH = "there is not enough net speech to make the verification yet"
VERIFY_NO_VOICEPRINT = "voiceprint with external_id does not exist"

VerifyResult = Literal["verified", "not_sure", "not_verified", "not_enough_speech", "voiceprint_not_found"]
VERDICTS: dict[Verdict, VerifyResult] = {
    Verdict.VERIFIED: "verified",
    Verdict.NOT_SURE: "not_sure",
    Verdict.NOT_VERIFIED: "not_verified",
}


@dataclass(frozen=True)
class VerifyOutcome:
    result: VerifyResult
    detail: str  # Voice Verify's words
    stream_uuid: str
    external_id: str
    speech_s: float  # net speech the score is (or would be) based on
    required_s: float
    score: float | None = None  # calibrated LLR, when there is a verdict
    profile: str | None = None
    profile_hash: str | None = None
    message: str = ""  # why, when the voiceprint does not exist


async def verify_stream(
    runtime: Runtime, stream: StreamSession, external_id: str, *, record: bool = True
) -> VerifyOutcome:
    """Score the stream's voiceprint so far against the stored one with the active calibration profile.

    Calibration problems (ProfileError, ModelMismatch) are raised, not turned into an outcome.
    """
    sessions = runtime.store.sessions
    required_s = runtime.settings.min_verify_speech_s
    try:
        stored = await voiceprints.get(sessions, external_id)
    except VoiceprintNotFound as exc:
        done = VerifyOutcome(
            VOICEPRINT_NOT_FOUND,
            VERIFY_NO_VOICEPRINT,
            stream.uuid,
            external_id,
            stream.speech_s,
            required_s,
            message=exc.message,
        )
    else:
        # A settled tail joins the voiceprint (once; free when none is due). A poll that can already be
        # answered does not wait for it: the next poll has it. Past VOXGATE_STREAM_SETTLE_UNTIL_S the
        # chunks alone keep up (bench/README.md, density after issue 11).
        if stream.speech_s < runtime.settings.stream_settle_until_s:
            await stream.settle(wait=stream.speech_s < required_s)
        try:
            test = stream.voiceprint(required_s, "a verification")
        except InsufficientSpeech as exc:
            done = VerifyOutcome(
                NOT_ENOUGH_SPEECH, VERIFY_NOT_ENOUGH, stream.uuid, external_id, exc.speech_s, required_s
            )
        else:
            profile = await profiles.active_profile(
                sessions, stream.sample_rate_hz, profile_spec(runtime.settings.profile, stored.source, stream.sample_rate_hz)
            )
            scored = profile.score(stored.voiceprint, test)
            done = VerifyOutcome(
                VERDICTS[scored.verdict],
                scored.verdict.value.replace("_", " "),
                stream.uuid,
                external_id,
                test.speech_s,
                required_s,
                score=scored.llr,
                profile=profile.name,
                profile_hash=profile.content_hash,
            )
            stream.record_verdict(scored.verdict.value, round(scored.llr, 4), test.speech_s)
    metrics.verified(done.result)
    if record:
        record_verify(sessions, done)
    return done


def profile_spec(configured: str, source: dict[str, Any], sample_rate_hz: int) -> str:
    """The shipped passphrase profile for a text-dependent voiceprint when the profile is ``auto``
    (an active customer profile still comes first: :func:`voxgate.store.profiles.active_profile`)."""
    if configured == "auto" and is_text_dependent(source):
        return f"{channel_for_rate(sample_rate_hz).value}-passphrase"
    return configured


def record_verify(sessions: DbSessions, outcome: VerifyOutcome, **extra: Any) -> None:
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
