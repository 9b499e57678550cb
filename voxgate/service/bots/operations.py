"""Speaker-verification operations of the reference: status, enroll, verify and delete of one speaker.

Status and delete answer at once. Enroll and verify run on a live stream (any door) for a while: they
take the speech of the stream from their start on, utterance by utterance, and after each one decide —
more audio is needed (a progress event, ``moreAudioRequired``), or done (a completed event).

An utterance ends with the bot's ``speakerVerificationEndOfUtterance`` (a gateway that runs
speech-to-text knows when the caller finished) or with voxgate's own end-of-speech detection: the
configured silence after speech in the analysed audio. Either way the stream's pending speech is
embedded then (a settle), and the utterance is the stream's pooled voiceprint sums now minus at its start
(:class:`~voxgate.streams.stages.Pooled`): no audio is kept and nothing is embedded twice. An "utterance"
in which VAD heard no speech is not one (so the two signals for the same utterance count once).

What is done when, per mode (:class:`~voxgate.service.bots.config.ConfigSet`):

- text-dependent enroll: ``enrollUtterances`` (3) utterances with ``minUtteranceSpeech`` (1 s) each;
  their speech-weighted pool is the voiceprint, marked ``text-dependent`` with its phrase;
- text-dependent verify: the first utterance with enough speech is scored alone;
- text-independent enroll / verify: utterances add up until ``minEnrollSpeech`` (20 s) /
  ``minVerifySpeech`` (3 s) of net speech; verify scores the pool;
- either: past the maximum utterances (the reference's ``speakerVerificationEnrollMaxUtterances`` /
  ``...VerifyMaxUtterances``), past the timeout, or when the call ends, the operation fails
  (``success: false`` with a ``reasonText``).

``rawResult`` is voxgate's own figures, snake_case as in its REST API: ``llr`` (the calibrated score),
``verdict``, ``speech_length`` (net speech, seconds), ``utterances``, and per utterance what it brought.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from voxgate.audio.vad import WINDOW_S
from voxgate.biometrics.profile import (
    CalibrationProfile,
    Verdict,
    channel_for_rate,
    resolve_profile,
    shipped_profiles,
)
from voxgate.errors import VoiceprintExists, VoiceprintNotFound
from voxgate.service import metrics
from voxgate.service.bots import activities as act
from voxgate.service.bots.config import TEXT_INDEPENDENT, Mode, Plan, normalised_phrase
from voxgate.service.enrollment import TEXT_DEPENDENT, model_name
from voxgate.service.verification import VERDICTS, VerifyOutcome, profile_spec, record_verify
from voxgate.store import events, profiles, voiceprints
from voxgate.store.voiceprints import StoredVoiceprint
from voxgate.streams import StreamSession
from voxgate.streams.stages import EMPTY, Pooled

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a running operation looks for the end of an utterance
VIA = "bot"  # detail of the events an operation records
# the reference's three answers for voxgate's three verdicts
ANSWERS: dict[Verdict, str] = {
    Verdict.VERIFIED: "yes",
    Verdict.NOT_VERIFIED: "no",
    Verdict.NOT_SURE: "unknown",
}
Emit = Callable[[act.Event], Awaitable[None]]


# -- the speaker's voiceprint ----------------------------------------------------------------------------


def stored_mode(stored: StoredVoiceprint) -> Mode:
    """A voiceprint's type: text-dependent when enrolled so, text-independent otherwise."""
    return TEXT_DEPENDENT if stored.source.get("mode") == TEXT_DEPENDENT else TEXT_INDEPENDENT


async def find_speaker(runtime: Runtime, plan: Plan) -> StoredVoiceprint | None:
    """The speaker's voiceprint under its prefix, or None. One enrolled under another prefix whose ids
    happen to join to the same external id (``acme`` + ``2x``, ``acme2`` + ``x``) is not this speaker."""
    try:
        stored = await voiceprints.get(runtime.store.sessions, plan.external_id)
    except VoiceprintNotFound:
        return None
    return stored if owned(stored, plan.prefix) else None


def owned(stored: StoredVoiceprint, prefix: str) -> bool:
    recorded = stored.source.get("speaker_prefix")
    return recorded is None or recorded == prefix


def speaker_figures(stored: StoredVoiceprint) -> dict[str, Any]:
    source = stored.source
    return {
        "external_id": stored.external_id,
        "type": stored_mode(stored),
        "phrase": source.get("phrase"),
        "created": stored.created.isoformat(),
        "speech_length": round(stored.voiceprint.speech_s, 3),
        "utterances": source.get("utterances"),
        "model": model_name(stored.voiceprint),
    }


# -- status and delete: at once ------------------------------------------------------------------------


async def speaker_status(runtime: Runtime, plan: Plan) -> act.Event:
    stored = await find_speaker(runtime, plan)
    raw: dict[str, Any] = {
        "operation": "status",
        "speaker_id": plan.speaker_id,
        "external_id": plan.external_id,
    }
    if stored is not None:
        raw.update(speaker_figures(stored))
    return act.event(act.SPEAKER_STATUS, {"success": True, "enrolled": stored is not None, "rawResult": raw})


async def delete_speaker(runtime: Runtime, plan: Plan) -> act.Event:
    sessions = runtime.store.sessions
    raw = {"operation": "delete", "speaker_id": plan.speaker_id, "external_id": plan.external_id}
    stored = await find_speaker(runtime, plan)
    try:
        if stored is None:
            raise VoiceprintNotFound(f"speaker {plan.speaker_id!r} is not enrolled")
        await voiceprints.delete(sessions, plan.external_id)
    except VoiceprintNotFound:
        reason = f"speaker {plan.speaker_id!r} is not enrolled"
        return act.event(act.ACTION_RESULT, {"success": False, "rawResult": raw, "reasonText": reason})
    await events.record(sessions, events.VOICEPRINT_DELETE, events.OK, external_id=plan.external_id, via=VIA)
    return act.event(act.ACTION_RESULT, {"success": True, "rawResult": raw})


def failed(kind: str, reason: str, raw: dict[str, Any] | None = None) -> act.Event:
    """The completed event of an enroll or verify that could not even start."""
    name = act.ENROLL_COMPLETED if kind == "enroll" else act.VERIFY_COMPLETED
    return act.event(
        name,
        {
            "success": False,
            "rawResult": raw or {"operation": kind},
            "interimRawResults": [],
            "reasonText": reason,
        },
    )


# -- calibration -----------------------------------------------------------------------------------------

_shipped: dict[tuple[str, int], CalibrationProfile] = {}


async def calibration(
    runtime: Runtime, spec: str, source: dict[str, Any], sample_rate_hz: int
) -> CalibrationProfile:
    """A configuration set's profile: ``auto`` is what ``POST /api/v2/verify`` uses (the active profile,
    else the channel's, the passphrase one for a text-dependent voiceprint); ``passphrase`` is the
    channel's passphrase profile; anything else a shipped profile's name or a profile file."""
    if spec == "auto":
        default = profile_spec(runtime.settings.profile, source, sample_rate_hz)
        return await profiles.active_profile(runtime.store.sessions, sample_rate_hz, default)
    name = f"{channel_for_rate(sample_rate_hz).value}-passphrase" if spec == "passphrase" else spec
    if name not in shipped_profiles():
        return await asyncio.to_thread(resolve_profile, name, sample_rate_hz)
    key = (name, sample_rate_hz)
    if key not in _shipped:
        _shipped[key] = await asyncio.to_thread(resolve_profile, name, sample_rate_hz)
    return _shipped[key]


# -- enroll and verify: on a stream, utterance by utterance -----------------------------------------------


class Operation:
    """One enroll or verify on one stream. :meth:`begin`, then :meth:`run` (a task) until it emits its
    completed event; :meth:`end_of_utterance` is the bot's signal, :meth:`stop` ends it early."""

    def __init__(
        self, runtime: Runtime, plan: Plan, stream: StreamSession, emit: Emit, stored: StoredVoiceprint | None
    ) -> None:
        assert plan.mode is not None and plan.config_set is not None
        self.runtime = runtime
        self.plan = plan
        self.mode: Mode = plan.mode
        self.config = plan.config_set
        self.stream = stream
        self.stored = stored  # verify: the voiceprint to score against
        self._emit = emit
        self.kind = plan.kind
        self.utterances = 0
        self.accepted = 0
        self.total: Pooled = EMPTY  # the accepted utterances' speech
        self.interim: list[dict[str, Any]] = []  # rawResult of each utterance before the last
        self.done = False
        self.ended_at: float | None = None  # time.monotonic() when the last utterance ended (latency)
        self._cut_lock = asyncio.Lock()
        self._ended: deque[tuple[Pooled, float]] = deque()  # utterances cut, not yet judged (speech, time)
        self._stop_reason: str | None = None
        self._wake = asyncio.Event()
        self._mark: Pooled = EMPTY
        self._heard_mark = 0.0
        self._started = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def begin(self) -> None:
        """From now on the stream's speech is this operation's: what came before is embedded first (and
        left out). The stream's voiceprint cap is lifted meanwhile (a long call may have reached it)."""
        pipeline = self.stream.pipeline
        pipeline.max_speech_s = None
        await self.stream.settle(force=True)
        pipeline.reset_vad()  # each utterance is heard afresh (see SpeechPipeline.reset_vad)
        self._mark, self._heard_mark = pipeline.pooled(), pipeline.heard_speech_s
        self._started = time.monotonic()

    async def end_of_utterance(self) -> None:
        """The bot's signal: the utterance ends here. The stream's audio so far is cut now (the door awaits
        this before it takes more audio), and judged by the operation's task."""
        if not self.done:
            await self._cut()

    def stop(self, reason: str) -> None:
        """End it (the call ended, the server stops): its completed event says why."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:  # never silent: the bot hears it, the log has it
            log.exception("bot operation failed", extra={"stream_uuid": self.stream.uuid})
            await self._complete_failed(f"the operation failed: {exc}")
        finally:
            self.done = True
            if not self.stream.closed:  # the stream's own cap again (the server's setting)
                self.stream.pipeline.max_speech_s = self.runtime.settings.stream_max_speech_s

    async def _loop(self) -> None:
        deadline = self._started + self.plan.timeout_s
        while not self.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._complete_failed(
                    f"timed out after {self.plan.timeout_s:g} s with {self.utterances} utterance(s): "
                    + self._missing()
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(POLL_S, remaining))
            self._wake.clear()
            if self._silence_after_speech():
                await self._cut()
            while self._ended and not self.done:
                part, ended_at = self._ended.popleft()
                await self._judge(part, ended_at)
            if not self.done and (self._stop_reason is not None or self.stream.closed):
                await self._complete_failed(self._stop_reason or "the call ended")
                return

    def _silence_after_speech(self) -> bool:
        silence_s = self.plan.end_of_speech_s
        if silence_s <= 0:
            return False
        pipeline = self.stream.pipeline
        return pipeline.heard_speech_s - self._heard_mark >= WINDOW_S and pipeline.silence_s >= silence_s

    # -- one utterance -----------------------------------------------------------------------------------

    async def _cut(self) -> None:
        """End the utterance here: the stream's pending speech is embedded, and the speech since the last
        cut is one utterance (unless VAD heard none: then nothing was said)."""
        pipeline = self.stream.pipeline
        async with self._cut_lock:
            await self.stream.settle(force=True)
            pipeline.reset_vad()
            now, heard_now = pipeline.pooled(), pipeline.heard_speech_s
            part, heard_s = now - self._mark, heard_now - self._heard_mark
            self._mark, self._heard_mark = now, heard_now
            if heard_s < WINDOW_S and part.speech_s <= 0:
                return
            self._ended.append((part, time.monotonic()))
            self._wake.set()

    async def _judge(self, part: Pooled, ended_at: float) -> None:
        """One utterance: more audio needed (a progress event), or done (the completed event)."""
        self.ended_at = ended_at
        self.utterances += 1
        minimum = self.config.min_utterance_speech_s
        raw: dict[str, Any] = {
            **self._identity(),
            "utterance": self.utterances,
            "utterance_speech_length": round(part.speech_s, 3),
        }
        if part.speech_s <= 0 or part.speech_s < minimum:
            raw["accepted"] = False
            raw["reason"] = (
                f"the utterance held {part.speech_s:.2f} s of net speech; each needs {max(minimum, 0.5):g} s"
            )
        else:
            raw["accepted"] = True
            self.accepted += 1
            self.total = self.total + part
        raw.update(self._progress())
        if raw["accepted"] and self._enough():
            test = part if (self.kind == "verify" and self.mode == TEXT_DEPENDENT) else self.total
            await (self._enroll(test, raw) if self.kind == "enroll" else self._verify(test, raw))
        elif self.utterances >= self.plan.max_utterances:
            limit = (
                "speakerVerificationEnrollMaxUtterances"
                if self.kind == "enroll"
                else "speakerVerificationVerifyMaxUtterances"
            )
            await self._complete_failed(
                f"not enough audio after {self.utterances} utterance(s) ({limit} {self.plan.max_utterances}): "
                + self._missing(),
                raw,
            )
        else:
            name = act.ENROLL_PROGRESS if self.kind == "enroll" else act.VERIFY_PROGRESS
            self.interim.append(raw)
            await self._emit(act.event(name, {"moreAudioRequired": True, "rawResult": raw}))

    def _enough(self) -> bool:
        if self.kind == "enroll":
            if self.mode == TEXT_DEPENDENT:
                return self.accepted >= self.config.enroll_utterances
            return self.total.speech_s >= self.config.min_enroll_speech_s
        if self.mode == TEXT_DEPENDENT:
            return True  # this utterance was accepted: one is scored alone
        return self.total.speech_s >= self.config.min_verify_speech_s

    def _missing(self) -> str:
        if self.mode == TEXT_DEPENDENT:
            needed = self.config.enroll_utterances if self.kind == "enroll" else 1
            return (
                f"{self.accepted} of {needed} utterance(s) of the phrase had the "
                f"{self.config.min_utterance_speech_s:g} s of net speech each needs"
            )
        required = (
            self.config.min_enroll_speech_s if self.kind == "enroll" else self.config.min_verify_speech_s
        )
        return f"{self.total.speech_s:.1f} s of net speech, {required:g} s needed"

    def _identity(self) -> dict[str, Any]:
        return {
            "operation": self.kind,
            "type": self.mode,
            "config_set": self.config.name,
            "speaker_id": self.plan.speaker_id,
            "external_id": self.plan.external_id,
        }

    def _progress(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "utterances": self.utterances,
            "max_utterances": self.plan.max_utterances,
            "accepted_utterances": self.accepted,
            "speech_length": round(self.total.speech_s, 3),
        }
        if self.mode == TEXT_DEPENDENT:
            figures["required_utterances"] = self.config.enroll_utterances if self.kind == "enroll" else 1
            figures["required_utterance_speech_length"] = self.config.min_utterance_speech_s
        else:
            figures["required_speech_length"] = (
                self.config.min_enroll_speech_s if self.kind == "enroll" else self.config.min_verify_speech_s
            )
        return figures

    # -- completion --------------------------------------------------------------------------------------

    async def _enroll(self, pooled: Pooled, raw: dict[str, Any]) -> None:
        sessions = self.runtime.store.sessions
        stream = self.stream
        voiceprint = stream.pipeline.voiceprint_of(pooled, what="an enrollment")
        source: dict[str, Any] = {
            "type": "bot",
            "mode": self.mode,
            "phrase": self.plan.phrase,
            "speaker_id": self.plan.speaker_id,
            "speaker_prefix": self.plan.prefix,
            "config_set": self.config.name,
            "utterances": self.accepted,
            "stream_uuid": stream.uuid,
            "stream_type": stream.type.value,
            "sample_rate_hz": stream.sample_rate_hz,
        }
        try:
            await voiceprints.add(sessions, self.plan.external_id, voiceprint, source)
        except VoiceprintExists:
            await self._complete_failed(
                f"a voiceprint is already stored under {self.plan.external_id!r}", raw
            )
            return
        raw["model"] = model_name(voiceprint)
        metrics.enrolled(VIA, "created")
        await events.record(
            sessions,
            events.ENROLL,
            events.CREATED,
            stream_uuid=stream.uuid,
            external_id=self.plan.external_id,
            speech_s=round(voiceprint.speech_s, 3),
            via=VIA,
            mode=self.mode,
            utterances=self.accepted,
            model=raw["model"],
        )
        await self._complete({"success": True, "rawResult": raw, "interimRawResults": self.interim})

    async def _verify(self, pooled: Pooled, raw: dict[str, Any]) -> None:
        stored = self.stored
        assert stored is not None
        stream = self.stream
        test = stream.pipeline.voiceprint_of(pooled, what="a verification")
        profile = await calibration(self.runtime, self.config.profile, stored.source, stream.sample_rate_hz)
        scored = profile.score(stored.voiceprint, test)
        raw.update(
            llr=round(scored.llr, 4),
            verdict=scored.verdict.value,
            scored_speech_length=round(test.speech_s, 3),
            profile=profile.name,
        )
        outcome = VerifyOutcome(
            VERDICTS[scored.verdict],
            scored.verdict.value.replace("_", " "),
            stream.uuid,
            self.plan.external_id,
            test.speech_s,
            self.config.min_verify_speech_s or self.config.min_utterance_speech_s,
            score=scored.llr,
            profile=profile.name,
            profile_hash=profile.content_hash,
        )
        stream.last_verdict, stream.last_score = scored.verdict.value, round(scored.llr, 4)
        metrics.verified(outcome.result)
        record_verify(
            self.runtime.store.sessions, outcome, via=VIA, mode=self.mode, utterances=self.utterances
        )
        await self._complete(
            {
                "success": True,
                "verified": ANSWERS[scored.verdict],
                "rawResult": raw,
                "interimRawResults": self.interim,
            }
        )

    async def _complete_failed(self, reason: str, raw: dict[str, Any] | None = None) -> None:
        raw = raw or {**self._identity(), **self._progress()}
        if self.kind == "enroll":
            metrics.enrolled(VIA, "failed")
        await self._complete(
            {"success": False, "rawResult": raw, "interimRawResults": self.interim, "reasonText": reason}
        )

    async def _complete(self, value: dict[str, Any]) -> None:
        self.done = True
        name = act.ENROLL_COMPLETED if self.kind == "enroll" else act.VERIFY_COMPLETED
        await self._emit(act.event(name, value))


def voiceprint_problem(plan: Plan, stored: StoredVoiceprint | None) -> str | None:
    """Why an operation cannot start on this speaker's voiceprint (None: it can)."""
    who = f"speaker {plan.speaker_id!r}"
    if plan.kind == "enroll":
        return None if stored is None else f"{who} is already enrolled: delete it first to enroll again"
    if stored is None:
        return f"{who} is not enrolled"
    mode = stored_mode(stored)
    if plan.mode != mode:
        return f"{who} is enrolled {mode}; a {plan.mode} verification cannot use that voiceprint"
    enrolled, said = normalised_phrase(stored.source.get("phrase")), normalised_phrase(plan.phrase)
    if mode == TEXT_DEPENDENT and enrolled and said and enrolled != said:
        return f"{who} enrolled the phrase {stored.source.get('phrase')!r}, not {plan.phrase!r}"
    return None


__all__ = [
    "Emit",
    "Operation",
    "calibration",
    "delete_speaker",
    "failed",
    "find_speaker",
    "speaker_status",
    "stored_mode",
    "voiceprint_problem",
]
