"""Bot parameters and configuration sets: layering, the reference's limits, refusals that name the
parameter, and the configuration-set file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxgate.service.bots.config import (
    BadParameter,
    check_session_params,
    load_sets,
    normalised_phrase,
    plan,
    send_events,
)
from voxgate.settings import Settings

SPEAKER = {"speakerVerificationSpeakerId": "123456"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_the_references_defaults_per_type(settings: Settings) -> None:
    sets = load_sets(settings)
    td = plan("enroll", [{**SPEAKER, "speakerVerificationType": "text-dependent"}], sets, settings)
    assert (td.mode, td.max_utterances, td.config_set and td.config_set.enroll_utterances) == (
        "text-dependent",
        5,
        3,
    )
    assert (
        plan(
            "verify", [{**SPEAKER, "speakerVerificationType": "text-dependent"}], sets, settings
        ).max_utterances
        == 1
    )
    ti = plan("enroll", [SPEAKER], sets, settings)  # no type: text-independent
    assert (ti.mode, ti.max_utterances) == ("text-independent", 20)
    assert ti.config_set is not None and ti.config_set.min_enroll_speech_s == settings.min_enroll_speech_s
    assert (
        plan("verify", [SPEAKER], sets, settings, "text-dependent").mode == "text-dependent"
    )  # the voiceprint's


def test_layers_later_win_and_the_prefix_joins(settings: Settings) -> None:
    sets = load_sets(settings)
    layers: list[dict[str, object]] = [
        {
            "speakerVerificationSpeakerPrefix": "acme:",
            "speakerVerificationEnrollMaxUtterances": "7",
            "callid": "x",
        },
        {"speakerVerificationEnrollMaxUtterances": 9},
        {**SPEAKER, "speakerVerificationPhrase": "My voice is my password"},
    ]
    chosen = plan("enroll", layers, sets, settings)
    assert (chosen.external_id, chosen.max_utterances, chosen.phrase) == (
        "acme:123456",
        9,
        "My voice is my password",
    )
    defaulted = plan("status", [SPEAKER], sets, settings.model_copy(update={"bot_speaker_prefix": "p-"}))
    assert defaulted.external_id == "p-123456"
    assert plan("status", [{"speakerVerificationSpeakerId": 42}], sets, settings).speaker_id == "42"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "speakerVerificationSpeakerId is required"),
        ({**SPEAKER, "speakerVerificationType": "voice"}, "speakerVerificationType"),
        ({**SPEAKER, "speakerVerificationEnrollMaxUtterances": 0}, "speakerVerificationEnrollMaxUtterances"),
        ({**SPEAKER, "speakerVerificationEnrollMaxUtterances": 101}, "from 1 to 100"),
        (
            {**SPEAKER, "speakerVerificationEnrollMaxUtterances": 2.5},
            "speakerVerificationEnrollMaxUtterances",
        ),
        (
            {**SPEAKER, "speakerVerificationEnrollMaxUtterances": True},
            "speakerVerificationEnrollMaxUtterances",
        ),
        ({**SPEAKER, "speakerVerificationConfigSet": "nuance"}, "not configured"),
        (
            {
                **SPEAKER,
                "speakerVerificationConfigSet": "text-dependent",
                "speakerVerificationType": "text-independent",
            },
            "is text-dependent, but speakerVerificationType is text-independent",
        ),
        (
            {
                **SPEAKER,
                "speakerVerificationType": "text-dependent",
                "speakerVerificationEnrollMaxUtterances": 2,
            },
            "needs 3 utterances",
        ),
        ({"speakerVerificationSpeakerId": "x" * 257}, "at most 256"),
        ({**SPEAKER, "speakerVerificationSpeakerPrefix": "p" * 129}, "at most 128"),
        ({**SPEAKER, "speakerVerificationSpeakerId": ["1"]}, "must be a string"),
    ],
)
def test_bad_parameters_are_named(settings: Settings, params: dict[str, object], named: str) -> None:
    with pytest.raises(BadParameter, match=named):
        plan("enroll", [params], load_sets(settings), settings)


def test_send_events_and_session_params() -> None:
    assert send_events([{}]) is None
    names = send_events(
        [{"sendEventsToBot": ["speakerVerificationActionResult", "speakerVerificationSpeakerStatus"]}]
    )
    assert names == frozenset({"speakerverificationactionresult", "speakerverificationspeakerstatus"})  # any case
    assert send_events([{"sendEventsToBot": "a, b"}]) == frozenset({"a", "b"})  # a TwiML parameter is a string
    with pytest.raises(BadParameter, match="sendEventsToBot"):
        check_session_params({"sendEventsToBot": 3})
    with pytest.raises(BadParameter, match="speakerVerificationEndOfSpeechSilence"):
        check_session_params({"speakerVerificationEndOfSpeechSilence": 11})
    check_session_params({"speakerVerificationType": "text-dependent", "unrelatedBotSetting": [1]})


def test_phrases_compare_loosely() -> None:
    assert normalised_phrase("My voice is my password.") == normalised_phrase("my  VOICE is my password")
    assert normalised_phrase("") is None


def test_a_configuration_set_file(tmp_path: Path) -> None:
    path = tmp_path / "sets.json"
    path.write_text(
        json.dumps(
            {
                "strict": {
                    "type": "text-dependent",
                    "verifyMaxUtterances": 2,
                    "minUtteranceSpeech": 1.5,
                    "profile": "passphrase",
                },
                "long": {"type": "text-independent", "minEnrollSpeech": 30, "timeout": 300},
            }
        )
    )
    settings = Settings(data_dir=tmp_path, bot_config_sets=path)
    sets = load_sets(settings)
    assert set(sets) == {"text-dependent", "text-independent", "strict", "long"}
    strict = plan("verify", [{**SPEAKER, "speakerVerificationConfigSet": "strict"}], sets, settings)
    assert (strict.mode, strict.max_utterances, strict.config_set and strict.config_set.profile) == (
        "text-dependent",
        2,
        "passphrase",
    )
    assert strict.config_set is not None and strict.config_set.enroll_utterances == 3  # the type's default
    long = plan("enroll", [{**SPEAKER, "speakerVerificationConfigSet": "long"}], sets, settings)
    assert long.timeout_s == 300 and long.config_set is not None and long.config_set.min_enroll_speech_s == 30


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ("not json", "cannot read"),
        ("[]", "JSON object"),
        ('{"x": {"type": "text-dependent", "minUtteranceSpeech": -1}}', "set 'x', minUtteranceSpeech"),
        ('{"x": {"type": "spoken"}}', "set 'x', type"),
        ('{"x": {"type": "text-dependent", "typo": 1}}', "set 'x', typo"),
        ('{"x": {"type": "text-dependent", "enrollUtterances": 6}}', "allows only 5"),
    ],
)
def test_a_bad_configuration_set_file_refuses_to_start(tmp_path: Path, document: str, named: str) -> None:
    path = tmp_path / "sets.json"
    path.write_text(document)
    with pytest.raises(ValueError, match=named):
        Settings(data_dir=tmp_path, bot_config_sets=path)
