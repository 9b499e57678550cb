"""The reference's activity shapes in, its event shape out."""

from __future__ import annotations

import pytest

from voxgate.service.bots.activities import Activity, ActivityError, event, is_activity_message, parse

PARAMS = {"speakerVerificationSpeakerId": "123456"}


def test_every_shape_of_the_reference() -> None:
    audiocodes = {"type": "event", "name": "speakerVerificationGetSpeakerStatus", "activityParams": PARAMS}
    bot_framework = {
        "type": "event",
        "name": "speakerVerificationDeleteSpeaker",
        "channelData": {"activityParams": PARAMS},
    }
    dialogflow = {"activities": [audiocodes, {"type": "message", "text": "Please say your passphrase"}]}
    config = {
        "type": "event",
        "name": "config",
        "sessionParams": {"speakerVerificationSpeakerPrefix": "acme:"},
    }
    assert parse(audiocodes) == [Activity("speakerVerificationGetSpeakerStatus", PARAMS)]
    assert parse(bot_framework) == [Activity("speakerVerificationDeleteSpeaker", PARAMS)]
    assert parse(dialogflow) == [
        Activity("speakerVerificationGetSpeakerStatus", PARAMS)
    ]  # the prompt is not ours
    assert parse(config) == [Activity("config", {"speakerVerificationSpeakerPrefix": "acme:"})]
    assert parse({**audiocodes, "streamSid": "MZ1"})[0].stream_sid == "MZ1"
    assert parse({"type": "event", "name": "hangup"}) == []
    for raw in (audiocodes, dialogflow, config):
        assert is_activity_message(raw)
    assert not is_activity_message({"event": "media", "media": {}})


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ([], "JSON object"),
        ({"activities": "x"}, "list"),
        ({"activities": ["x"]}, "JSON object"),
        ({"type": "event", "name": "speakerVerificationEnrol"}, "unknown event"),
        (
            {"type": "event", "name": "speakerVerificationEnroll", "activityParams": [1]},
            "activityParams must be an object",
        ),
        ({"type": "event", "name": "config", "sessionParams": "x"}, "sessionParams must be an object"),
        ({"type": "event", "name": "speakerVerificationEnroll", "streamSid": 5}, "streamSid"),
        ({"activities": [{"type": "event", "name": "config"}] * 17}, "at most 16"),
    ],
)
def test_unusable_activities_are_named(raw: object, named: str) -> None:
    with pytest.raises(ActivityError, match=named):
        parse(raw)


def test_events_out() -> None:
    assert event("speakerVerificationEnrollProgress", {"moreAudioRequired": True, "rawResult": {}}) == {
        "type": "event",
        "name": "speakerVerificationEnrollProgress",
        "value": {"moreAudioRequired": True, "rawResult": {}},
    }
