"""Webhook subscriptions (Voice Verify's ``/api/v2/subscription``) and the webhook machinery's lifecycle.

The router only validates and stores subscriptions; what sends callbacks, when and how, is
:mod:`voxgate.service.webhooks`. Its startup runs after the streams router's, whose registry it listens to.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field, field_validator, model_validator

from voxgate.api.deps import RuntimeDep, Unlocked, User
from voxgate.api.errors import BadRequest, error_response
from voxgate.api.schemas import INFO_EXAMPLE, LOCKED, MAX_INFO_KEYS, UNAUTHORIZED, UUID_EXAMPLE, Info
from voxgate.service.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryStats,
    Webhooks,
    check_target,
    check_url,
    redact,
)
from voxgate.store import subscriptions
from voxgate.store.subscriptions import (
    MAX_CHANNEL,
    MAX_EXTERNAL_ID,
    MAX_URL,
    Subscription,
    SubscriptionNotFound,
)
from voxgate.streams import StreamNotFound
from voxgate.streams.registry import parse_uuid

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
SubscriptionType = Literal["streams", "enroll", "verify"]
WEBHOOK_EXAMPLE = "https://crm.example.com/voxgate/callbacks"

ChannelUuid = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CHANNEL,
        pattern=NO_NUL,
        description="`streams`: the `source_uuid` in the `info` of the streams to watch. `enroll`, "
        "`verify`: the uuid of a live stream.",
        examples=[UUID_EXAMPLE],
    ),
]


def _external_id(info: Info | None, required: bool) -> str | None:
    value = (info or {}).get("external_id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_EXTERNAL_ID or "\x00" in value:
        raise ValueError(
            f"info.external_id is required for enroll and verify subscriptions: a string of 1 to "
            f"{MAX_EXTERNAL_ID} characters (the customer whose voiceprint to create or check)"
        )
    return value


# -- schemas -------------------------------------------------------------------------------------------


class SubscriptionRequest(BaseModel):
    channel_uuid: ChannelUuid
    webhook: str = Field(
        min_length=1,
        max_length=MAX_URL,
        description="The http:// or https:// URL that receives the callbacks (POST, JSON).",
        examples=[WEBHOOK_EXAMPLE],
    )
    type: SubscriptionType = Field(
        description="`streams`: a stream with that source_uuid starts or stops. `enroll`: enrollment "
        "progress of the stream, every second. `verify`: its verification, every second.",
        examples=["verify"],
    )
    info: Info | None = Field(
        default=None,
        max_length=MAX_INFO_KEYS,
        description='`enroll` and `verify`: `{"external_id": ...}` (required). `streams`: `{}`.',
        examples=[{"external_id": "customer-00042"}],
    )

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str) -> str:
        return check_url(value)

    @model_validator(mode="after")
    def _needs_external_id(self) -> SubscriptionRequest:
        _external_id(self.info, self.type != "streams")
        return self

    @property
    def external_id(self) -> str | None:
        return None if self.type == "streams" else _external_id(self.info, True)


class SubscriptionDeleteRequest(BaseModel):
    uuid: str | None = Field(
        default=None,
        max_length=64,
        description="The subscription's uuid, as returned at creation. Alone, it deletes that one.",
        examples=["5d1c7a52-0d8e-4a57-8c1a-5d3c1e0f9b77"],
    )
    channel_uuid: ChannelUuid | None = Field(
        default=None, description="Delete the subscriptions of this channel (narrowed by the fields below)."
    )
    webhook: str | None = Field(default=None, max_length=MAX_URL, examples=[WEBHOOK_EXAMPLE])
    type: SubscriptionType | None = None
    info: Info | None = Field(
        default=None,
        max_length=MAX_INFO_KEYS,
        description="`external_id`, if given, narrows the match; other keys are ignored.",
    )

    @model_validator(mode="after")
    def _names_something(self) -> SubscriptionDeleteRequest:
        if self.uuid is None and self.channel_uuid is None:
            raise ValueError("name the subscription: its `uuid`, or its `channel_uuid` (with type, webhook)")
        return self


class SubscriptionCreated(BaseModel):
    uuid: str = Field(
        description="The subscription's id (delete it with it).",
        examples=["5d1c7a52-0d8e-4a57-8c1a-5d3c1e0f9b77"],
    )
    type: SubscriptionType
    channel_uuid: str = Field(examples=[UUID_EXAMPLE])
    webhook: str = Field(examples=[WEBHOOK_EXAMPLE])
    external_id: str | None = Field(examples=["customer-00042"])
    created: datetime = Field(description="When it was stored (UTC).")
    secret: str = Field(
        description=f"The key that signs this subscription's callbacks: `{SIGNATURE_HEADER}: sha256=<hex>` "
        f"is the HMAC-SHA256 of `<{TIMESTAMP_HEADER}>.<body>`. Shown only in this reply: keep it.",
        examples=["9c1f4e0a6b2d8f7e5c3a1b0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f"],
    )


class DeliveryCounts(BaseModel):
    delivered: int = Field(description="Callbacks answered 2xx.", examples=[118])
    failed: int = Field(description="Callbacks given up after all retries.", examples=[0])
    dropped: int = Field(description="Callbacks dropped from a full queue.", examples=[0])
    retries: int = Field(description="Attempts repeated after an error.", examples=[2])
    last_status: int | None = Field(description="HTTP status of the last attempt.", examples=[200])
    last_error: str | None = Field(
        description="Network error or timeout of the last attempt.", examples=[None]
    )
    last_attempt: datetime | None = Field(description="When the last attempt was made (UTC).")


class SubscriptionOut(BaseModel):
    uuid: str = Field(examples=["5d1c7a52-0d8e-4a57-8c1a-5d3c1e0f9b77"])
    type: SubscriptionType
    channel_uuid: str = Field(examples=[UUID_EXAMPLE])
    webhook: str = Field(description="The URL (a password in it is masked).", examples=[WEBHOOK_EXAMPLE])
    external_id: str | None = Field(examples=["customer-00042"])
    created: datetime
    deliveries: DeliveryCounts = Field(description="Since this server process started.")


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut] = Field(description="Oldest first. Secrets are never listed.")


class SubscriptionsDeleted(BaseModel):
    deleted: list[str] = Field(
        description="The uuids of the subscriptions deleted.",
        examples=[["5d1c7a52-0d8e-4a57-8c1a-5d3c1e0f9b77"]],
    )


# -- helpers -------------------------------------------------------------------------------------------


def _counts(stats: DeliveryStats | None) -> DeliveryCounts:
    if stats is None:
        return DeliveryCounts(
            delivered=0, failed=0, dropped=0, retries=0, last_status=None, last_error=None, last_attempt=None
        )
    return DeliveryCounts(
        delivered=stats.delivered,
        failed=stats.failed,
        dropped=stats.dropped,
        retries=stats.retries,
        last_status=stats.last_status,
        last_error=stats.last_error,
        last_attempt=stats.last_attempt,
    )


def _out(subscription: Subscription, hooks: Webhooks | None) -> SubscriptionOut:
    return SubscriptionOut(
        uuid=subscription.uuid,
        type=subscription.type,  # type: ignore[arg-type]  # the store holds only TYPES
        channel_uuid=subscription.channel_uuid,
        webhook=redact(subscription.url),
        external_id=subscription.external_id,
        created=subscription.created,
        deliveries=_counts(None if hooks is None else hooks.sender.stats(subscription.uuid)),
    )


def _channels(channel_uuid: str, type: SubscriptionType | None) -> list[str]:
    """The stored forms a channel may have: enroll/verify channels are kept as canonical stream uuids."""
    channels = [channel_uuid]
    if type != "streams":
        try:
            canonical = parse_uuid(channel_uuid)
        except ValueError:
            return channels
        if canonical != channel_uuid:
            channels.append(canonical)
    return channels


CALLBACKS_DOC = """
Callbacks are `POST`s of JSON to `webhook`, signed with the `secret` of this reply (headers
`X-Voxgate-Timestamp` and `X-Voxgate-Signature: sha256=<HMAC-SHA256 of "<timestamp>.<body>">`):

- `streams`, when an HTTP or WebSocket stream whose `info.source_uuid` equals `channel_uuid` starts or stops:
  `{"channel_uuid", "type": "stream", "status": 201|200, "payload": {"action": "added"|"removed", "stream_uuid"}}`.
- `enroll`, every second while the stream lives: `{"channel_uuid", "type": "enroll", "payload": {"stream_uuid",
  "external_id", "detail", "speech_length"}, "status"}` with detail "there is not enough net speech to create the
  enrollment yet" (200), "enrollment created successfully" (201) or "enrollment with this external_id already
  exists" (409). The first 201 or 409 is the last callback: the subscription is then deleted.
- `verify`, every second while the stream lives: `{"channel_uuid", "type": "verify", "status", "payload":
  {"stream_uuid", "external_id", "result", "speech_length", "score"}}` with result "there is not enough net speech
  to make the verification yet" (200, score null), "voiceprint with external_id does not exist" (404), "verified",
  "not verified" or "not sure" (200, score = calibrated LLR).

Enroll and verify subscriptions end with their stream. A subscription whose previous callback is still being
delivered skips a tick.

Callbacks go to public addresses only (unless the operator allows a network with
`VOXGATE_WEBHOOK_ALLOW_NETWORKS`): a URL with a user name or password, a numeric host that is not a dotted quad
or an IPv6 literal, or a literal private, loopback, link-local, multicast or reserved address is refused here
(400); a host name is resolved and checked at every delivery, and one that resolves to such an address fails
for good (a `webhook` event `failed`, "target not allowed").
"""

# -- endpoints -----------------------------------------------------------------------------------------


@router.post(
    "/api/v2/subscription",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Subscribe a webhook to stream, enroll or verify callbacks",
    description="Stores the subscription and returns its uuid and signing `secret` (shown only here).\n"
    + CALLBACKS_DOC,
    dependencies=[Unlocked],
    responses={
        400: error_response(
            "The webhook's target is not allowed: userinfo, a non-canonical numeric host, or a literal "
            "address that is not public.",
            "the webhook URL's address 127.0.0.1 is not a public address (...)",
        ),
        401: UNAUTHORIZED,
        404: error_response(
            "`enroll`/`verify`: no running stream with that uuid.",
            f"no running stream {UUID_EXAMPLE} (never opened, closed, or timed out)",
        ),
        409: error_response(
            "The same subscription (type, channel, external_id, webhook) exists.",
            "the same verify subscription already exists (5d1c7a52-...): delete it first to get a new secret",
        ),
        423: LOCKED,
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "examples": {
                        "verify": {
                            "value": {
                                "channel_uuid": UUID_EXAMPLE,
                                "webhook": WEBHOOK_EXAMPLE,
                                "type": "verify",
                                "info": {"external_id": "customer-00042"},
                            }
                        },
                        "streams": {
                            "value": {
                                "channel_uuid": INFO_EXAMPLE["source_uuid"],
                                "webhook": WEBHOOK_EXAMPLE,
                                "type": "streams",
                                "info": {},
                            }
                        },
                    }
                }
            }
        }
    },
)
async def subscribe(body: SubscriptionRequest, user: User, runtime: RuntimeDep) -> SubscriptionCreated:
    check_target(body.webhook, runtime.settings.webhook_allowed_networks)  # TargetNotAllowed: 400
    channel = body.channel_uuid
    if body.type != "streams":  # a live stream, in its canonical form; its owner sends the callbacks
        try:
            channel = runtime.streams.get(channel).uuid
        except StreamNotFound:
            elsewhere = await runtime.cluster.elsewhere(channel) if runtime.cluster is not None else None
            if elsewhere is None:
                raise
            channel = elsewhere
    try:
        created = await subscriptions.add(
            runtime.store.sessions, body.type, channel, body.webhook, body.external_id
        )
    except ValueError as exc:  # validated above; the store's own checks, just in case
        raise BadRequest(str(exc)) from exc
    log.info(
        "webhook subscribed",
        extra={"subscription": created.uuid, "type": created.type, "url": redact(created.url)},
    )
    return SubscriptionCreated(
        uuid=created.uuid,
        type=body.type,
        channel_uuid=created.channel_uuid,
        webhook=created.url,
        external_id=created.external_id,
        created=created.created,
        secret=created.secret,
    )


@router.get(
    "/api/v2/subscription",
    response_model=SubscriptionList,
    summary="List webhook subscriptions",
    description="Every subscription (secrets never shown) with its delivery counters since this process "
    "started.",
    responses={401: UNAUTHORIZED},
)
async def list_subscriptions(
    user: User,
    runtime: RuntimeDep,
    type: Annotated[SubscriptionType | None, Query(description="Only this type.")] = None,
    channel_uuid: Annotated[
        str | None, Query(max_length=MAX_CHANNEL, pattern=NO_NUL, description="Only this channel.")
    ] = None,
) -> SubscriptionList:
    found = await subscriptions.find(
        runtime.store.sessions, types=() if type is None else (type,), channel_uuid=channel_uuid
    )
    hooks = runtime.webhooks
    return SubscriptionList(subscriptions=[_out(s, hooks) for s in found])


@router.delete(
    "/api/v2/subscription",
    response_model=SubscriptionsDeleted,
    summary="Delete webhook subscriptions",
    description='Body: `{"uuid": ...}` (the id from the creation reply) deletes that subscription; or the '
    "creation body (`channel_uuid`, and optionally `type`, `webhook`, `info.external_id`) deletes every "
    "subscription that matches all the given fields. Callbacks already queued are still delivered.",
    responses={
        401: UNAUTHORIZED,
        404: error_response("No subscription matches.", "no subscription matches"),
    },
)
async def unsubscribe(
    body: Annotated[SubscriptionDeleteRequest, Body()], user: User, runtime: RuntimeDep
) -> SubscriptionsDeleted:
    sessions = runtime.store.sessions
    types = () if body.type is None else (body.type,)
    external_id = (body.info or {}).get("external_id")
    match: dict[str, Any] = {
        "uuid": body.uuid,
        "types": types,
        "url": body.webhook,
        "external_id": None if external_id is None else str(external_id),
    }
    deleted: list[Subscription] = []
    if body.channel_uuid is None:
        deleted = await subscriptions.remove(sessions, **match)
    else:
        for channel in _channels(body.channel_uuid, body.type):
            deleted += await subscriptions.remove(sessions, channel_uuid=channel, **match)
    if not deleted:
        raise SubscriptionNotFound("no subscription matches")
    hooks = runtime.webhooks
    for subscription in deleted:
        if hooks is not None:
            hooks.sender.forget(subscription.uuid)
    log.info("webhooks unsubscribed", extra={"subscriptions": [s.uuid for s in deleted]})
    return SubscriptionsDeleted(deleted=[s.uuid for s in deleted])
