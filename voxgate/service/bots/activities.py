"""The reference's JSON activities: bot → voxgate events in, voxgate → bot events out, word for word.

In (any of the reference's shapes)::

    {"type": "event", "name": "speakerVerificationEnroll", "activityParams": {...}}          AudioCodes Bot API
    {"type": "event", "name": ..., "channelData": {"activityParams": {...}}}                  Microsoft Bot Framework
    {"activities": [{"type": "event", "name": ..., "activityParams": {...}}, ...]}            Dialogflow payloads
    {"type": "event", "name": "config", "sessionParams": {...}}                               a bot's settings

Out: ``{"type": "event", "name": <event>, "value": {...}}`` with the reference's fields (``success``,
``enrolled``, ``moreAudioRequired``, ``verified``, ``rawResult``, ``interimRawResults``, ``reasonText``).
``rawResult`` is an object of voxgate's own figures (:mod:`voxgate.service.bots.operations`).

voxgate adds one event in, ``speakerVerificationEndOfUtterance``: the end of an utterance as a gateway
that runs speech-to-text knows it (otherwise voxgate's own end-of-speech detection ends utterances).
Activities of other types or names (a bot's prompts, hang-ups, ...) are none of voxgate's business and are
ignored; an unknown ``speakerVerification...`` name is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from voxgate.errors import VoxgateError

# bot → voxgate
GET_SPEAKER_STATUS: Final = "speakerVerificationGetSpeakerStatus"
ENROLL: Final = "speakerVerificationEnroll"
VERIFY: Final = "speakerVerificationVerify"
DELETE_SPEAKER: Final = "speakerVerificationDeleteSpeaker"
END_OF_UTTERANCE: Final = "speakerVerificationEndOfUtterance"  # voxgate's own
CONFIG: Final = "config"
INCOMING = (GET_SPEAKER_STATUS, ENROLL, VERIFY, DELETE_SPEAKER, END_OF_UTTERANCE, CONFIG)
# voxgate → bot
SPEAKER_STATUS: Final = "speakerVerificationSpeakerStatus"
ENROLL_PROGRESS: Final = "speakerVerificationEnrollProgress"
VERIFY_PROGRESS: Final = "speakerVerificationVerifyProgress"
ENROLL_COMPLETED: Final = "speakerVerificationEnrollCompleted"
VERIFY_COMPLETED: Final = "speakerVerificationVerifyCompleted"
ACTION_RESULT: Final = "SpeakerVerificationActionResult"
OUTGOING = (
    SPEAKER_STATUS,
    ENROLL_PROGRESS,
    VERIFY_PROGRESS,
    ENROLL_COMPLETED,
    VERIFY_COMPLETED,
    ACTION_RESULT,
)

MAX_ACTIVITIES = 16  # per message
Event = dict[str, Any]


class ActivityError(VoxgateError):
    """A message that is not a usable activity (the door answers it as its own bad request)."""


@dataclass(frozen=True)
class Activity:
    """One event from a bot: its name, its parameters (``activityParams``, or ``sessionParams`` of a
    ``config``), and the stream it names, if any (``streamSid`` on a WebSocket)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    stream_sid: str | None = None


def is_activity_message(raw: Mapping[str, Any]) -> bool:
    """A JSON object a bot sent (as opposed to a media-stream message, which has an ``event``)."""
    return "event" not in raw and (raw.get("type") is not None or isinstance(raw.get("activities"), list))


def parse(raw: Any) -> list[Activity]:
    """The speaker-verification activities of one message (others are left out); ActivityError for a
    message that is not an activity, or one of voxgate's events with unusable fields."""
    if not isinstance(raw, dict):
        raise ActivityError("an activity is a JSON object")
    items = raw.get("activities") if "type" not in raw else [raw]
    if not isinstance(items, list):
        raise ActivityError("activities must be a list of activity objects")
    if len(items) > MAX_ACTIVITIES:
        raise ActivityError(f"at most {MAX_ACTIVITIES} activities per message, got {len(items)}")
    found = []
    for item in items:
        activity = _one(item, raw.get("streamSid"))
        if activity is not None:
            found.append(activity)
    return found


def _one(item: Any, outer_sid: Any) -> Activity | None:
    if not isinstance(item, dict):
        raise ActivityError("an activity is a JSON object")
    name = item.get("name")
    if item.get("type") != "event" or not isinstance(name, str):
        return None  # a message, a prompt...: not for voxgate
    if name not in INCOMING:
        if name.lower().startswith("speakerverification"):
            raise ActivityError(f"unknown event {name[:80]!r}; voxgate takes {', '.join(INCOMING)}")
        return None
    if name == CONFIG:
        params = item.get("sessionParams", {})
        where = "sessionParams"
    else:
        channel_data = item.get("channelData")
        params = item.get("activityParams")
        where = "activityParams"
        if params is None and isinstance(channel_data, dict):
            params, where = channel_data.get("activityParams"), "channelData.activityParams"
        params = {} if params is None else params
    if not isinstance(params, dict):
        raise ActivityError(f"{name}: {where} must be an object")
    sid = item.get("streamSid", outer_sid)
    if sid is not None and not isinstance(sid, str):
        raise ActivityError(f"{name}: streamSid must be a string")
    return Activity(name, dict(params), sid or None)


def event(name: str, value: Mapping[str, Any]) -> Event:
    """One event to the bot, in the reference's shape."""
    return {"type": "event", "name": name, "value": dict(value)}
