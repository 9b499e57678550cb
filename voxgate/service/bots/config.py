"""What a bot operation runs with: configuration sets, and the parameters of the reference, layered.

A *configuration set* (``speakerVerificationConfigSet``) is a named choice of mode, utterance limits,
minimum speech, calibration profile, end-of-speech silence and timeout. Two are built in, named after the
two modes; ``VOXGATE_BOT_CONFIG_SETS`` names a JSON file with more (or replacing those two)::

    {"passphrase-strict": {"type": "text-dependent", "enrollUtterances": 3, "enrollMaxUtterances": 5,
                           "verifyMaxUtterances": 2, "minUtteranceSpeech": 1.2, "profile": "passphrase"},
     "long-calls": {"type": "text-independent", "minEnrollSpeech": 30, "minVerifySpeech": 5}}

Parameters come in layers, the later winning: the server's defaults, the stream's ``info`` (a WebSocket
start's ``customParameters``, set in the TwiML by whoever runs the call flow), the bot's ``config`` event
(``sessionParams``), and the operation's own ``activityParams``. :func:`plan` resolves them into one
:class:`Plan`, or raises :class:`BadParameter` naming the parameter (the bot hears it as ``reasonText``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxgate.errors import VoxgateError
from voxgate.service.enrollment import TEXT_DEPENDENT
from voxgate.settings import Settings
from voxgate.store.voiceprints import MAX_EXTERNAL_ID

TEXT_INDEPENDENT: Final = "text-independent"
MODES = (TEXT_DEPENDENT, TEXT_INDEPENDENT)
Mode = Literal["text-dependent", "text-independent"]
Kind = Literal["status", "enroll", "verify", "delete"]

# the reference's parameter names
SPEAKER_ID = "speakerVerificationSpeakerId"
PREFIX = "speakerVerificationSpeakerPrefix"
TYPE = "speakerVerificationType"
CONFIG_SET = "speakerVerificationConfigSet"
PHRASE = "speakerVerificationPhrase"
ENROLL_MAX = "speakerVerificationEnrollMaxUtterances"
VERIFY_MAX = "speakerVerificationVerifyMaxUtterances"
SEND_EVENTS = "sendEventsToBot"
# voxgate's own: how an utterance ends, and how long an operation may take
END_OF_SPEECH = "speakerVerificationEndOfSpeechSilence"
TIMEOUT = "speakerVerificationTimeout"
PARAMETERS = (
    SPEAKER_ID, PREFIX, TYPE, CONFIG_SET, PHRASE, ENROLL_MAX, VERIFY_MAX, SEND_EVENTS, END_OF_SPEECH, TIMEOUT
)  # fmt: skip
MAX_UTTERANCES = 100  # the reference's valid range is 1-100
MAX_PHRASE = 256
N = TypeVar("N", int, float)


class BadParameter(VoxgateError):
    """A bot parameter or configuration set that cannot be used (the reason goes back to the bot)."""


class ConfigSet(BaseModel):
    """One configuration set, as written in the JSON file (camelCase, like the reference)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = ""
    type: Mode
    enroll_utterances: int = Field(default=1, ge=1, le=MAX_UTTERANCES, alias="enrollUtterances")
    enroll_max_utterances: int = Field(ge=1, le=MAX_UTTERANCES, alias="enrollMaxUtterances")
    verify_max_utterances: int = Field(ge=1, le=MAX_UTTERANCES, alias="verifyMaxUtterances")
    min_utterance_speech_s: float = Field(default=0.0, ge=0, le=600, alias="minUtteranceSpeech")
    min_enroll_speech_s: float = Field(default=0.0, ge=0, le=3600, alias="minEnrollSpeech")
    min_verify_speech_s: float = Field(default=0.0, ge=0, le=3600, alias="minVerifySpeech")
    profile: str = Field(default="auto", min_length=1, max_length=1024)
    end_of_speech_s: float = Field(ge=0, le=10, alias="endOfSpeechSilence")
    timeout_s: float = Field(gt=0, le=3600, alias="timeout")


def builtin_sets(settings: Settings) -> dict[str, ConfigSet]:
    """The two sets every server has. Text-dependent: ``VOXGATE_PASSPHRASE_UTTERANCES`` (3) utterances of
    the phrase to enroll, at most 5, one to verify, each with ``VOXGATE_MIN_UTTERANCE_SPEECH_S``; scored
    with the passphrase profile. Text-independent: ``VOXGATE_MIN_ENROLL_SPEECH_S`` (20 s) of net speech
    to enroll and 3 s to verify, over at most 20 utterances each (the reference's defaults)."""
    common = {"endOfSpeechSilence": settings.bot_end_of_speech_s, "timeout": settings.bot_timeout_s}
    return {
        TEXT_DEPENDENT: ConfigSet.model_validate(
            {
                "name": TEXT_DEPENDENT,
                "type": TEXT_DEPENDENT,
                "enrollUtterances": settings.passphrase_utterances,
                "enrollMaxUtterances": 5,
                "verifyMaxUtterances": 1,
                "minUtteranceSpeech": settings.min_utterance_speech_s,
                **common,
            }
        ),
        TEXT_INDEPENDENT: ConfigSet.model_validate(
            {
                "name": TEXT_INDEPENDENT,
                "type": TEXT_INDEPENDENT,
                "enrollMaxUtterances": 20,
                "verifyMaxUtterances": 20,
                "minEnrollSpeech": settings.min_enroll_speech_s,
                "minVerifySpeech": max(3.0, settings.min_verify_speech_s),
                **common,
            }
        ),
    }


def load_sets(settings: Settings) -> dict[str, ConfigSet]:
    """The built-in sets and the file's; BadParameter naming the set and field of a bad file."""
    sets = builtin_sets(settings)
    path = settings.bot_config_sets
    if path is None:
        return sets
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadParameter(f"VOXGATE_BOT_CONFIG_SETS: cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise BadParameter(f"VOXGATE_BOT_CONFIG_SETS: {path} must hold a JSON object of named sets")
    for name, body in document.items():
        if not isinstance(body, dict) or not name or len(name) > 128:
            raise BadParameter(
                f"VOXGATE_BOT_CONFIG_SETS: set {name!r} must be an object under a name of 1-128 characters"
            )
        defaults = sets.get(body.get("type", ""), sets[TEXT_INDEPENDENT]).model_dump(by_alias=True)
        defaults.pop("name")
        try:
            chosen = ConfigSet.model_validate({**defaults, **body, "name": name})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in error["loc"])
            raise BadParameter(f"VOXGATE_BOT_CONFIG_SETS: set {name!r}, {where}: {error['msg']}") from None
        if chosen.type == TEXT_DEPENDENT and chosen.enroll_utterances > chosen.enroll_max_utterances:
            raise BadParameter(
                f"VOXGATE_BOT_CONFIG_SETS: set {name!r} needs {chosen.enroll_utterances} utterances to enroll "
                f"but allows only {chosen.enroll_max_utterances}"
            )
        sets[name] = chosen
    return sets


@dataclass(frozen=True)
class Plan:
    """One operation's parameters, resolved."""

    kind: Kind
    speaker_id: str
    prefix: str
    mode: Mode | None  # None: status and delete, or a verify that takes the voiceprint's own
    config_set: ConfigSet | None
    phrase: str | None
    max_utterances: int
    end_of_speech_s: float
    timeout_s: float

    @property
    def external_id(self) -> str:
        """The id the voiceprint is stored under: the prefix, then the speaker id (the reference's rule)."""
        return self.prefix + self.speaker_id


def merged(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The known parameters of every layer, later layers winning (unknown ones are other features')."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update({k: v for k, v in layer.items() if k in PARAMETERS and v is not None})
    return out


def plan(
    kind: Kind,
    layers: Sequence[Mapping[str, Any]],
    sets: Mapping[str, ConfigSet],
    settings: Settings,
    stored_mode: Mode | None = None,
) -> Plan:
    """Resolve an operation's parameters; BadParameter names the first problem. ``stored_mode``: the
    voiceprint's type, for a verify that names none."""
    p = merged(layers)
    speaker_id = _text(p, SPEAKER_ID, required=True, most=MAX_EXTERNAL_ID)
    prefix = _text(p, PREFIX, most=128) if PREFIX in p else settings.bot_speaker_prefix
    if len(prefix) + len(speaker_id) > MAX_EXTERNAL_ID:
        raise BadParameter(f"{PREFIX} and {SPEAKER_ID} together are longer than {MAX_EXTERNAL_ID} characters")
    if "\x00" in prefix + speaker_id:
        raise BadParameter(f"{SPEAKER_ID} and {PREFIX} must not contain NUL characters")
    if kind in ("status", "delete"):
        return Plan(kind, speaker_id, prefix, None, None, None, 1, 0.0, settings.bot_timeout_s)

    mode = _mode(p)
    chosen: ConfigSet | None = None
    if CONFIG_SET in p:
        name = _text(p, CONFIG_SET, most=128)
        if name not in sets:
            raise BadParameter(
                f"{CONFIG_SET} {name!r} is not configured; configured: {', '.join(sorted(sets))}"
            )
        chosen = sets[name]
        if mode is not None and mode != chosen.type:
            raise BadParameter(f"{CONFIG_SET} {name!r} is {chosen.type}, but {TYPE} is {mode}")
        mode = chosen.type
    if mode is None:
        mode = stored_mode if kind == "verify" and stored_mode is not None else TEXT_INDEPENDENT
    if chosen is None:
        chosen = sets[mode]
    limit_name = ENROLL_MAX if kind == "enroll" else VERIFY_MAX
    default = chosen.enroll_max_utterances if kind == "enroll" else chosen.verify_max_utterances
    max_utterances = _number(p, limit_name, int, 1, MAX_UTTERANCES, default)
    if kind == "enroll" and mode == TEXT_DEPENDENT and max_utterances < chosen.enroll_utterances:
        raise BadParameter(
            f"a text-dependent enrollment needs {chosen.enroll_utterances} utterances of the phrase; "
            f"{ENROLL_MAX} is {max_utterances}"
        )
    phrase = _text(p, PHRASE, most=MAX_PHRASE) if PHRASE in p else None
    return Plan(
        kind,
        speaker_id,
        prefix,
        mode,
        chosen,
        phrase or None,
        max_utterances,
        _number(p, END_OF_SPEECH, float, 0.0, 10.0, chosen.end_of_speech_s),
        _number(p, TIMEOUT, float, 1.0, 3600.0, chosen.timeout_s),
    )


def send_events(layers: Sequence[Mapping[str, Any]]) -> frozenset[str] | None:
    """``sendEventsToBot`` as lower-case names (the reference spells one ``speakerVerificationActionResult``
    there and ``SpeakerVerificationActionResult`` on the wire); None: every event is sent."""
    value = merged(layers).get(SEND_EVENTS)
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadParameter(f"{SEND_EVENTS} must be a list of event names (or a comma-separated string)")
    return frozenset(n.strip().lower() for n in names if n.strip())


def check_session_params(params: Mapping[str, Any]) -> None:
    """A ``config`` event's parameters, checked as far as they can be on their own."""
    known = merged([params])
    if TYPE in known:
        _mode(known)
    for name in (ENROLL_MAX, VERIFY_MAX):
        if name in known:
            _number(known, name, int, 1, MAX_UTTERANCES, 1)
    for name, low, high in ((END_OF_SPEECH, 0.0, 10.0), (TIMEOUT, 1.0, 3600.0)):
        if name in known:
            _number(known, name, float, low, high, 0.0)
    for name in (SPEAKER_ID, PREFIX, CONFIG_SET, PHRASE):
        if name in known:
            _text(known, name, most=MAX_EXTERNAL_ID)
    send_events([known])


def normalised_phrase(phrase: str | None) -> str | None:
    """Phrases compare without case, punctuation or extra spaces."""
    if not phrase:
        return None
    kept = "".join(c if c.isalnum() else " " for c in phrase.casefold())
    return " ".join(kept.split()) or None


def _mode(p: Mapping[str, Any]) -> Mode | None:
    value = p.get(TYPE)
    if value is None:
        return None
    if value == TEXT_DEPENDENT:
        return TEXT_DEPENDENT
    if value == TEXT_INDEPENDENT:
        return TEXT_INDEPENDENT
    raise BadParameter(f"{TYPE} must be {TEXT_DEPENDENT!r} or {TEXT_INDEPENDENT!r}, got {str(value)[:64]!r}")


def _text(p: Mapping[str, Any], name: str, *, required: bool = False, most: int = 256) -> str:
    value = p.get(name)
    if value is None:
        if required:
            raise BadParameter(f"{name} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadParameter(f"{name} must be a string")
    text = str(value)
    if required and not text:
        raise BadParameter(f"{name} must not be empty")
    if len(text) > most:
        raise BadParameter(f"{name} is {len(text)} characters long; at most {most}")
    return text


def _number(p: Mapping[str, Any], name: str, kind: type[N], low: N, high: N, default: N) -> N:
    value = p.get(name)
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value) if not isinstance(value, str) else kind(value.strip())
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise BadParameter(f"{name} must be a number from {low} to {high}, got {str(value)[:32]!r}") from None
    if not low <= number <= high or number != number:
        raise BadParameter(f"{name} must be from {low} to {high}, got {number}")
    return number
