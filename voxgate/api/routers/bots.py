"""The voice-bot door over REST: the VoiceAI Connect speaker-verification activities for a gateway that
keeps the call's audio elsewhere (an HTTP stream, a SIP call, a WebSocket stream of another client).

The request body is the bot's activity exactly as the reference writes it; the answer holds the events
that answer it at once (status, delete, a refused operation). An enroll or verify then runs on the stream
as its audio comes; its progress and completed events go to the stream's webhook (``PUT .../webhook``,
signed like every voxgate callback) and can be fetched with ``GET .../activities?after=N``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field

from voxgate.api.cluster import here_or_owner
from voxgate.api.deps import RuntimeDep, Unlocked, User
from voxgate.api.errors import BadRequest, error_response
from voxgate.api.schemas import LOCKED, STREAM_NOT_FOUND, UNAUTHORIZED, UUID_EXAMPLE
from voxgate.errors import NotRunning
from voxgate.service.bots import BotSession, BotSessions, parse
from voxgate.service.bots.operations import speaker_figures
from voxgate.service.runtime import Runtime
from voxgate.store import voiceprints
from voxgate.streams.registry import parse_uuid

router = APIRouter(tags=["voice bots"])

ENROLL_EXAMPLE = {
    "type": "event",
    "name": "speakerVerificationEnroll",
    "activityParams": {
        "speakerVerificationType": "text-dependent",
        "speakerVerificationSpeakerId": "123456",
        "speakerVerificationPhrase": "My voice is my password",
    },
}
STATUS_EXAMPLE = {
    "type": "event",
    "name": "speakerVerificationGetSpeakerStatus",
    "activityParams": {"speakerVerificationSpeakerId": "123456"},
}
ActivityBody = Annotated[
    dict[str, Any],
    Body(
        description="One activity (`type: event`, `name`, `activityParams`; or Bot Framework's "
        '`channelData.activityParams`), or `{"activities": [...]}`.',
        examples=[STATUS_EXAMPLE, ENROLL_EXAMPLE],
    ),
]
BAD_ACTIVITY = error_response(
    "Not a usable activity.", "speakerVerificationEnroll: activityParams must be an object"
)


class Events(BaseModel):
    activities: list[dict[str, Any]] = Field(
        description="Events to the bot, in the reference's shape (`type: event`, `name`, `value`).",
        examples=[
            [
                {
                    "type": "event",
                    "name": "speakerVerificationSpeakerStatus",
                    "value": {"success": True, "enrolled": False, "rawResult": {"speaker_id": "123456"}},
                }
            ]
        ],
    )
    last: int | None = Field(
        default=None,
        description="Sequence number of the stream's latest later event: pass it as `after` next time.",
        examples=[2],
    )


class WebhookRequest(BaseModel):
    webhook: str | None = Field(
        description="Where the stream's later events go (POST, JSON: the event plus `uuid` and `sequence`); "
        "null: nowhere.",
        examples=["https://bot.example.com/voxgate-events"],
    )


class WebhookResponse(BaseModel):
    uuid: str = Field(examples=[UUID_EXAMPLE])
    webhook: str | None
    secret: str | None = Field(
        description="Key of the callbacks' `X-Voxgate-Signature` (HMAC-SHA256 of `<timestamp>.<body>`); shown "
        "only here.",
        examples=["9c1f0e..."],
    )


class Speaker(BaseModel):
    speaker_id: str = Field(examples=["123456"])
    external_id: str = Field(examples=["acme:123456"])
    type: str = Field(examples=["text-dependent"])
    phrase: str | None = Field(examples=["My voice is my password"])
    created: datetime
    speech_length: float = Field(examples=[4.9])


class Speakers(BaseModel):
    prefix: str
    speakers: list[Speaker]


def _canonical(text: str) -> str | None:
    try:
        return parse_uuid(text)
    except ValueError:
        return None


def _bots(runtime: Runtime) -> BotSessions:
    if runtime.bots is None:
        raise NotRunning("bot operations are not running (the server is starting or stopping)")
    return runtime.bots


async def _handle(session: BotSession, body: dict[str, Any], stream: Any) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for activity in parse(body):
        answers.extend(await session.handle(activity, stream))
    return answers


@router.post(
    "/api/v2/bot/activities",
    response_model=Events,
    summary="A bot's activity that needs no audio (status, delete)",
    description="`speakerVerificationGetSpeakerStatus` and `speakerVerificationDeleteSpeaker` are answered "
    "here. An enroll or verify needs a live stream: `POST /api/v2/bot/{uuid}/activities`.",
    dependencies=[Unlocked],
    responses={400: BAD_ACTIVITY, 401: UNAUTHORIZED, 423: LOCKED},
)
async def activities(body: ActivityBody, user: User, runtime: RuntimeDep) -> Events:
    bots = _bots(runtime)

    async def nowhere(event: dict[str, Any], stream: Any) -> None:
        """Later events have no stream to come from here."""

    return Events(activities=await _handle(BotSession(bots, nowhere), body, None))


@router.post(
    "/api/v2/bot/{uuid}/activities",
    response_model=Events,
    summary="A bot's activity about a live stream",
    description="Any of the reference's events (and `config`, and voxgate's "
    "`speakerVerificationEndOfUtterance`). The answer holds the events that answer it at once; an enroll or "
    "verify then sends `...Progress` / `...Completed` to the stream's webhook and to `GET` of this path.",
    dependencies=[Unlocked],
    responses={400: BAD_ACTIVITY, 401: UNAUTHORIZED, 404: STREAM_NOT_FOUND, 423: LOCKED},
)
async def stream_activities(
    uuid: str, body: ActivityBody, request: Request, user: User, runtime: RuntimeDep
) -> Events | Response:
    stream = await here_or_owner(runtime, request, uuid)  # the operations run where the stream's audio is
    if isinstance(stream, Response):
        return stream
    box = _bots(runtime).mailbox(stream)
    answers = await _handle(box.session, body, stream)
    return Events(activities=answers, last=box.last)


@router.get(
    "/api/v2/bot/{uuid}/activities",
    response_model=Events,
    summary="A stream's later bot events",
    description="The progress and completed events of the stream's operations after sequence number `after` "
    "(the last 256 are kept, and for 30 s after the stream ends).",
    responses={401: UNAUTHORIZED, 404: STREAM_NOT_FOUND},
)
async def later_events(
    uuid: str,
    request: Request,
    user: User,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="The `last` of the previous answer.")] = 0,
) -> Events | Response:
    bots = _bots(runtime)
    ended = _canonical(uuid)
    box = bots.find_mailbox(ended) if ended is not None else None  # also for moments after the call ended
    if box is None:
        stream = await here_or_owner(runtime, request, uuid)
        if isinstance(stream, Response):
            return stream
        box = bots.mailbox(stream)
    return Events(activities=box.after(after), last=box.last)


@router.put(
    "/api/v2/bot/{uuid}/webhook",
    response_model=WebhookResponse,
    summary="Send a stream's later bot events to a webhook",
    description="Public addresses only, unless the operator allows the network "
    "(`VOXGATE_WEBHOOK_ALLOW_NETWORKS`); delivered, retried and signed like every voxgate callback.",
    dependencies=[Unlocked],
    responses={
        400: error_response(
            "The webhook may not be used.", "the webhook URL must start with http:// or https://"
        ),
        401: UNAUTHORIZED,
        404: STREAM_NOT_FOUND,
        423: LOCKED,
    },
)
async def set_webhook(
    uuid: str, body: WebhookRequest, request: Request, user: User, runtime: RuntimeDep
) -> WebhookResponse | Response:
    stream = await here_or_owner(runtime, request, uuid)
    if isinstance(stream, Response):
        return stream
    box = _bots(runtime).mailbox(stream)
    try:
        secret = box.set_webhook(body.webhook)
    except ValueError as exc:  # not an absolute http(s) URL (TargetNotAllowed: where it may not go, 400)
        raise BadRequest(str(exc)) from None
    return WebhookResponse(uuid=stream.uuid, webhook=box.webhook, secret=secret)


@router.get(
    "/api/v2/bot/speakers",
    response_model=Speakers,
    summary="The speakers enrolled under a speaker prefix",
    description="One customer's speakers: the voiceprints whose external_id starts with `prefix` (at most "
    "1000), with the speaker id the bot knows them by.",
    responses={401: UNAUTHORIZED},
)
async def speakers(
    user: User,
    runtime: RuntimeDep,
    prefix: Annotated[str, Query(max_length=128, description="speakerVerificationSpeakerPrefix.")] = "",
) -> Speakers:
    found = []
    for stored in await voiceprints.with_prefix(runtime.store.sessions, prefix):
        recorded = stored.source.get("speaker_prefix")
        if recorded is not None and recorded != prefix:
            continue  # another customer's speaker whose ids happen to start alike
        figures = speaker_figures(stored)
        found.append(
            Speaker(
                speaker_id=stored.external_id[len(prefix) :],
                external_id=stored.external_id,
                type=figures["type"],
                phrase=figures["phrase"],
                created=stored.created,
                speech_length=figures["speech_length"],
            )
        )
    return Speakers(prefix=prefix, speakers=found)
