"""Enrollment: a customer's voiceprint from a live stream, or from recordings.

One copy of each, shared by ``POST /api/v2/enroll`` and the enroll webhook (streams), and by
``POST /api/v2/import`` and ``voxgate enroll`` (recordings). Outcomes carry Voice Verify's words, never an
HTTP status: each door turns them into its own answer. Every call records its event unless the caller
records it itself (the webhook ticker records only changes).

Stream outcomes: ``not_enough_speech`` (ask again later), ``created``, ``exists`` (also while there is
not enough speech yet, so a poller learns it early).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from voxgate.audio.decode import decode_bytes
from voxgate.audio.types import AudioLimits
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.models import MODEL_IDS
from voxgate.biometrics.voiceprint import Voiceprint, combine
from voxgate.errors import (
    AudioError,
    AudioTooLong,
    EmptyAudio,
    InsufficientSpeech,
    ModelError,
    VoiceprintExists,
    VoiceprintNotFound,
)
from voxgate.service import metrics
from voxgate.store import events, voiceprints
from voxgate.store.db import DbSessions
from voxgate.streams import StreamSession

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

NOT_ENOUGH_SPEECH: Final = "not_enough_speech"
CREATED: Final = "created"
EXISTS: Final = "exists"

# Voice Verify's words for each outcome (the `detail` of enroll)
ENROLL_NOT_ENOUGH = "there is not enough net speech to create the enrollment yet"
ENROLL_CREATED = "enrollment created successfully"
ENROLL_EXISTS = "enrollment with this external_id already exists"

EnrollResult = Literal["created", "not_enough_speech", "exists"]
DETAILS: dict[EnrollResult, str] = {
    CREATED: ENROLL_CREATED,
    NOT_ENOUGH_SPEECH: ENROLL_NOT_ENOUGH,
    EXISTS: ENROLL_EXISTS,
}

MAX_RECORDINGS = 32  # per enrollment from recordings
MAX_PASSPHRASE_UTTERANCES = 5  # per passphrase enrollment: more repetitions of the words add little
TEXT_DEPENDENT: Final = "text-dependent"  # the `mode` in a passphrase voiceprint's source


def is_text_dependent(source: dict[str, Any]) -> bool:
    """A voiceprint enrolled from passphrase recordings (scored with the passphrase profile)."""
    return source.get("mode") == TEXT_DEPENDENT


@dataclass(frozen=True)
class EnrollOutcome:
    result: EnrollResult
    detail: str  # Voice Verify's words
    stream_uuid: str
    external_id: str
    speech_s: float  # net speech that was, or would be, enrolled
    required_s: float
    model: str | None = None  # the models of the stored voiceprint (created only)
    message: str = ""  # why, when it exists

    @property
    def final(self) -> bool:
        """Created or exists: asking again changes nothing."""
        return self.result != NOT_ENOUGH_SPEECH


def model_name(voiceprint: Voiceprint) -> str:
    """The models a voiceprint holds, known ones in their usual order: ``ecapa+campplus``."""
    return "+".join(
        [m for m in MODEL_IDS if m in voiceprint.embeddings]
        + [m for m in voiceprint.model_ids if m not in MODEL_IDS]
    )


async def voiceprint_exists(sessions: DbSessions, external_id: str) -> bool:
    try:
        await voiceprints.get(sessions, external_id)
    except VoiceprintNotFound:
        return False
    return True


# -- from a live stream --------------------------------------------------------------------------------


async def enroll_stream(
    runtime: Runtime, stream: StreamSession, external_id: str, *, record: bool = True
) -> EnrollOutcome:
    """Store the stream's voiceprint under ``external_id`` once it holds enough net speech."""
    sessions = runtime.store.sessions
    required_s = runtime.settings.min_enroll_speech_s

    def outcome(
        result: EnrollResult, speech_s: float, model: str | None = None, message: str = ""
    ) -> EnrollOutcome:
        return EnrollOutcome(
            result, DETAILS[result], stream.uuid, external_id, speech_s, required_s, model, message
        )

    await stream.settle()  # a settled tail joins the voiceprint first (once; free when none is due)
    try:
        voiceprint = stream.voiceprint(required_s, "an enrollment")
    except InsufficientSpeech as exc:
        if await voiceprint_exists(sessions, external_id):
            done = outcome(EXISTS, exc.speech_s, message=f"{ENROLL_EXISTS} ({external_id!r})")
        else:
            done = outcome(NOT_ENOUGH_SPEECH, exc.speech_s)
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
            done = outcome(EXISTS, voiceprint.speech_s, message=exc.message)
        else:
            done = outcome(CREATED, voiceprint.speech_s, model=model_name(voiceprint))
    metrics.enrolled("stream", done.result)
    if record:
        await record_enroll(sessions, done)
    return done


async def record_enroll(sessions: DbSessions, outcome: EnrollOutcome, **extra: Any) -> None:
    """The ``enroll`` event of an outcome (``extra`` goes into its detail)."""
    if outcome.model is not None:
        extra["model"] = outcome.model
    await events.record(
        sessions,
        events.ENROLL,
        events.CREATED if outcome.result == CREATED else outcome.result,
        stream_uuid=outcome.stream_uuid,
        external_id=outcome.external_id,
        speech_s=outcome.speech_s,
        **extra,
    )


# -- from recordings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One recording as it arrived: its name (for messages and the voiceprint's source) and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class RecordingSpeech:
    filename: str
    duration_s: float
    speech_s: float
    sample_rate_hz: int


@dataclass(frozen=True)
class RecordingsEnrolled:
    external_id: str
    voiceprint: Voiceprint  # what was stored: all recordings, weighted by net speech
    recordings: list[RecordingSpeech]
    replaced: bool
    passphrase: bool = False

    @property
    def model(self) -> str:
        return model_name(self.voiceprint)


def recording_voiceprint(
    biometrics: Biometrics,
    recording: Recording,
    limits: AudioLimits,
    channel: int | None,
    min_speech_s: float,
) -> tuple[Voiceprint, RecordingSpeech]:
    """Decode, find the speech, embed: blocking, so it runs on the runtime's offline worker."""
    audio = decode_bytes(recording.data, limits=limits, channel=channel, filename=recording.filename)
    analysis = biometrics.analyse(audio)
    voiceprint = biometrics.voiceprint(
        analysis, min_speech_s=min_speech_s, what=f"an enrollment from {recording.filename}"
    )
    return voiceprint, RecordingSpeech(
        filename=recording.filename,
        duration_s=round(analysis.duration_s, 3),
        speech_s=round(analysis.speech_s, 3),
        sample_rate_hz=audio.sample_rate_hz,
    )


async def enroll_recordings(
    runtime: Runtime,
    external_id: str,
    recordings: AsyncIterable[Recording],
    *,
    channel: int | None = None,
    overwrite: bool = False,
    min_speech_s: float | None = None,
    passphrase: bool = False,
) -> RecordingsEnrolled:
    """One voiceprint from every recording (each must hold the minimum net speech on its own), stored
    under ``external_id`` in one write: either all of it is stored or nothing is. The ``import`` event
    records the outcome, failures included. Recordings are read one at a time, so only one is in memory.

    ``passphrase``: the text-dependent case, 3 (``VOXGATE_PASSPHRASE_UTTERANCES``) to 5 short recordings
    of the same words, each with ``VOXGATE_MIN_UTTERANCE_SPEECH_S`` of speech; the voiceprint is marked
    ``text-dependent`` and verified with the passphrase calibration profile."""
    sessions = runtime.store.sessions
    biometrics = runtime.require_biometrics()
    settings = runtime.settings
    default_minimum = settings.min_utterance_speech_s if passphrase else settings.min_enroll_speech_s
    minimum = default_minimum if min_speech_s is None else min_speech_s
    limits = AudioLimits.from_settings(runtime.settings)
    parts: list[Voiceprint] = []
    heard: list[RecordingSpeech] = []
    try:
        if not overwrite and await voiceprint_exists(sessions, external_id):  # before any decoding work
            raise VoiceprintExists(
                f"a voiceprint for external_id {external_id!r} already exists (overwrite=true replaces it)"
            )
        budget_s = limits.max_duration_s  # for all the recordings together: 32 small files of hours of
        # silence must not cost 32 times the limit (each is refused from its header before decoding)
        most = MAX_PASSPHRASE_UTTERANCES if passphrase else MAX_RECORDINGS
        async for recording in recordings:
            if len(heard) == most:
                raise AudioError(f"at most {most} recordings per {'passphrase ' if passphrase else ''}enrollment")
            if budget_s <= 0:
                raise AudioTooLong(
                    f"{recording.filename}: the recordings of one enrollment may last {limits.max_duration_s:g} s "
                    "in all (VOXGATE_MAX_AUDIO_DURATION_S), and the ones before it use that up"
                )
            try:
                voiceprint, speech = await runtime.run_offline(
                    recording_voiceprint,
                    biometrics,
                    recording,
                    dataclasses.replace(limits, max_duration_s=budget_s),
                    channel,
                    minimum,
                )
            except AudioTooLong as exc:
                if budget_s == limits.max_duration_s:
                    raise
                raise AudioTooLong(
                    f"{exc.message}: the recordings of one enrollment may last {limits.max_duration_s:g} s in all "
                    f"(VOXGATE_MAX_AUDIO_DURATION_S), and the ones before it took "
                    f"{limits.max_duration_s - budget_s:.1f} s"
                ) from exc
            budget_s -= speech.duration_s
            metrics.recording_speech(speech.speech_s)
            parts.append(voiceprint)
            heard.append(speech)
        if not parts:
            raise EmptyAudio("no recording was given: send at least one")
        if passphrase and len(parts) < settings.passphrase_utterances:
            raise AudioError(
                f"a passphrase enrollment needs {settings.passphrase_utterances} to {MAX_PASSPHRASE_UTTERANCES} "
                f"recordings of the same words (VOXGATE_PASSPHRASE_UTTERANCES), got {len(parts)}"
            )
        combined = combine(parts)
        source: dict[str, Any] = {"type": "recordings", "files": [r.filename for r in heard]}
        if passphrase:
            source["mode"] = TEXT_DEPENDENT
        await voiceprints.add(sessions, external_id, combined, source, replace=overwrite)
    except (AudioError, InsufficientSpeech, VoiceprintExists, ModelError) as exc:
        metrics.enrolled("recordings", "failed")
        await events.record(
            sessions,
            events.IMPORT,
            events.FAILED,
            external_id=external_id,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        raise
    done = RecordingsEnrolled(external_id, combined, heard, replaced=overwrite, passphrase=passphrase)
    metrics.enrolled("recordings", "created")
    await events.record(
        sessions,
        events.IMPORT,
        events.CREATED,
        external_id=external_id,
        speech_s=combined.speech_s,
        files=len(heard),
        model=done.model,
        mode=TEXT_DEPENDENT if passphrase else "text-independent",
    )
    return done
