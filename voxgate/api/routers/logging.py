"""The event log over HTTP (filtered, paginated, JSON or CSV), the billing aggregate, and retention.

A periodic task started here purges, every hour, events older than the retention and expired tokens.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from voxgate.api.deps import RuntimeDep, User
from voxgate.api.errors import BadRequest, Detail
from voxgate.api.schemas import AUTH_RESPONSES
from voxgate.store import events

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000

# PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database
NO_NUL = r"^[^\x00]*$"
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]

router = APIRouter(tags=["logging"])


# -- schemas -------------------------------------------------------------------------------------------


class Format(StrEnum):
    json = "json"
    csv = "csv"


class Order(StrEnum):
    asc = "asc"
    desc = "desc"


class EventOut(BaseModel):
    id: int = Field(description="Event number, increasing in the order events were written.", examples=[1042])
    time: datetime = Field(description="When it happened (UTC).", examples=["2025-03-14T09:26:53.589Z"])
    type: str = Field(
        description="What happened: " + ", ".join(f"`{kind}`" for kind in events.EVENT_TYPES) + ".",
        examples=[events.VERIFY],
    )
    stream: str | None = Field(
        description="The stream's uuid, if the event concerns a stream.",
        examples=["0b4f4c1e-5b7a-4a0c-9d39-3f7c2f0a9e11"],
    )
    external_id: str | None = Field(
        description="The voiceprint's external_id, if any.", examples=["customer-4711"]
    )
    outcome: str = Field(
        description="How it ended: `ok`, `created`, `failed`, a verdict (`verified`, `not_sure`, "
        "`not_verified`) or another reason named by the event type.",
        examples=["verified"],
    )
    duration_s: float | None = Field(
        description="Seconds the stream was open (on `stream_stop` events).", examples=[None]
    )
    detail: dict[str, Any] = Field(
        description="Further facts, by event type (e.g. score, speech_length, client, stream_type).",
        examples=[{"score": 4.2, "speech_length": 7.9}],
    )


class EventsPage(BaseModel):
    total: int = Field(description="Events matching the filters, over all pages.", examples=[2345])
    page: int = Field(description="This page's number (from 1).", examples=[1])
    page_size: int = Field(description="Events per page.", examples=[100])
    events: list[EventOut] = Field(description="The events of this page, in time order.")


class UsageCounts(BaseModel):
    enrollments: int = Field(description="`enroll` events with outcome `ok` or `created`.", examples=[12])
    verifications: int = Field(
        description="`verify` events with a verdict (outcome `verified`, `not_sure` or `not_verified`).",
        examples=[340],
    )
    imports: int = Field(description="`import` events with outcome `ok` or `created`.", examples=[3])
    stream_minutes: dict[str, float] = Field(
        description="Per stream type (`HTTP`, `WebSocket`, `SIP`, ...; `unknown` if not recorded): the "
        "summed length of the streams that stopped, in minutes.",
        examples=[{"HTTP": 512.25, "SIP": 1290.5}],
    )


class UsageDayOut(UsageCounts):
    day: date = Field(description="The UTC day.", examples=["2025-03-14"])


class UsageReport(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    start: datetime = Field(
        alias="from", description="Start of the period (inclusive, UTC).", examples=["2025-03-01T00:00:00Z"]
    )
    end: datetime = Field(
        alias="to", description="End of the period (exclusive, UTC).", examples=["2025-03-14T09:30:00Z"]
    )
    days: list[UsageDayOut] = Field(
        description="One entry per UTC day with any invoiceable action, in order."
    )
    totals: UsageCounts = Field(description="The sums over the whole period.")


# -- /api/v2/logging -----------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula (OWASP: prefix such text with ')."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


CSV_COLUMNS = ("id", "time", "type", "stream", "external_id", "outcome", "duration_s", "detail")


def _csv(page: events.EventPage) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for event in page.events:
        writer.writerow(
            [
                event.id,
                event.time.isoformat(),
                _cell(event.type),
                _cell(event.stream_uuid),
                _cell(event.external_id),
                _cell(event.outcome),
                "" if event.duration_s is None else repr(event.duration_s),
                _cell(json.dumps(event.detail, ensure_ascii=False, sort_keys=True)),
            ]
        )
    return buffer.getvalue()


def _utc(moment: datetime | None, name: str) -> datetime | None:
    """Aware UTC (a time without a zone is UTC); 400 for a time that has no UTC equivalent."""
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"`{name}` is out of range") from None


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    start_utc, end_utc = _utc(start, "from"), _utc(end, "to")
    if start_utc is not None and end_utc is not None and start_utc > end_utc:
        raise BadRequest("`from` is after `to`")
    return start_utc, end_utc


BAD_RANGE: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Detail,
        "description": "`from` is after `to`, or out of range.",
        "content": {"application/json": {"example": {"detail": "`from` is after `to`"}}},
    }
}


FromQuery = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="Only events at or after this time (ISO 8601; without a zone, UTC).",
        examples=["2025-03-01T00:00:00Z"],
    ),
]
ToQuery = Annotated[
    datetime | None,
    Query(
        alias="to",
        description="Only events before this time (ISO 8601; without a zone, UTC).",
        examples=["2025-04-01"],
    ),
]


@router.get(
    "/api/v2/logging",
    response_model=EventsPage,
    summary="The event log, filtered and paginated",
    description="Events (stream start/stop, enrollments, verifications, imports, deletions, logins, "
    "maintenance actions, errors) matching every filter given, in time order, one page at a time. "
    "`format=csv` answers the same page as `text/csv` with a header row "
    f"({', '.join(CSV_COLUMNS)}; `detail` as JSON; text that a spreadsheet would take for a formula "
    "is prefixed with `'`). The total over all pages is also in the `X-Total-Count` header. Events are "
    "kept `VOXGATE_EVENT_RETENTION_DAYS` (default 90) days.",
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "id,time,type,stream,external_id,outcome,duration_s,detail\r\n"
                    "7,2025-03-14T09:26:53.589000+00:00,verify,0b4f4c1e-5b7a-4a0c-9d39-3f7c2f0a9e11,"
                    'customer-4711,verified,,"{""score"": 4.2}"\r\n',
                }
            },
            "headers": {"X-Total-Count": {"description": "Matching events.", "schema": {"type": "integer"}}},
        },
        **BAD_RANGE,
        **AUTH_RESPONSES,
    },
)
async def logging_list(
    user: User,
    runtime: RuntimeDep,
    response: Response,
    start: FromQuery = None,
    end: ToQuery = None,
    type: Annotated[
        list[EventType] | None,
        Query(
            max_length=32, description="Only these event types (repeat for several).", examples=[["verify"]]
        ),
    ] = None,
    external_id: Annotated[
        str | None,
        Query(
            max_length=256,
            pattern=NO_NUL,
            description="Only events of this external_id.",
            examples=["customer-4711"],
        ),
    ] = None,
    stream: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=NO_NUL,
            description="Only events of this stream (its uuid).",
            examples=["0b4f4c1e-5b7a-4a0c-9d39-3f7c2f0a9e11"],
        ),
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000_000, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Events per page.")] = 100,
    order: Annotated[Order, Query(description="`asc`: oldest first; `desc`: newest first.")] = Order.asc,
    format: Annotated[Format, Query(description="`json` or `csv`.")] = Format.json,
) -> Any:
    start, end = _range(start, end)
    flt = events.EventFilter(
        start=start, end=end, types=tuple(type or ()), external_id=external_id, stream_uuid=stream
    )
    result = await events.find(
        runtime.store.sessions,
        flt,
        offset=(page - 1) * page_size,
        limit=page_size,
        newest_first=order is Order.desc,
    )
    headers = {"X-Total-Count": str(result.total)}
    if format is Format.csv:
        headers["Content-Disposition"] = f'attachment; filename="voxgate-events-page{page}.csv"'
        return Response(_csv(result), media_type="text/csv; charset=utf-8", headers=headers)
    response.headers.update(headers)
    return EventsPage(
        total=result.total,
        page=page,
        page_size=page_size,
        events=[
            EventOut(
                id=e.id,
                time=e.time,
                type=e.type,
                stream=e.stream_uuid,
                external_id=e.external_id,
                outcome=e.outcome,
                duration_s=e.duration_s,
                detail=e.detail,
            )
            for e in result.events
        ],
    )


# -- /api/v2/logging_aggregate -------------------------------------------------------------------------


def _counts(usage: list[events.DayUsage]) -> UsageCounts:
    minutes: dict[str, float] = {}
    for day in usage:
        for kind, seconds in day.stream_seconds.items():
            minutes[kind] = minutes.get(kind, 0.0) + seconds
    return UsageCounts(
        enrollments=sum(d.enrollments for d in usage),
        verifications=sum(d.verifications for d in usage),
        imports=sum(d.imports for d in usage),
        stream_minutes={kind: round(s / 60.0, 3) for kind, s in sorted(minutes.items())},
    )


@router.get(
    "/api/v2/logging_aggregate",
    response_model=UsageReport,
    summary="Invoiceable actions per day (billing)",
    description="Counts, per UTC day, the invoiceable actions recorded in the event log between `from` "
    "(inclusive; default: the start of the current month, UTC) and `to` (exclusive; default: now):\n\n"
    "- **enrollments**: `enroll` events with outcome `ok` or `created`, i.e. enrollments that stored "
    "a voiceprint (not-enough-speech answers and conflicts are not counted);\n"
    "- **verifications**: `verify` events with a verdict (`verified`, `not_sure`, `not_verified`); every "
    "verify request that answered a verdict counts, so a stream polled twice a second counts each poll;\n"
    "- **imports**: `import` events with outcome `ok` or `created` (one per voiceprint made from "
    "recordings, however many recordings it took);\n"
    "- **stream_minutes**: per stream type, the summed open time (`duration_s`) of the streams that "
    "*stopped* in the period, in minutes (3 decimals); a stream counts wholly on the day it stopped.\n\n"
    "Days with nothing to count are left out; `totals` sums the period. Events older than "
    "`VOXGATE_EVENT_RETENTION_DAYS` (default 90) days are purged, so export at least that often (Voice Verify's advice: once "
    "a day, from the start of the billing cycle).",
    responses={**BAD_RANGE, **AUTH_RESPONSES},
)
async def logging_aggregate(
    user: User, runtime: RuntimeDep, start: FromQuery = None, end: ToQuery = None
) -> UsageReport:
    now = datetime.now(UTC)
    start_utc, end_utc = _range(
        start if start is not None else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        end if end is not None else now,
    )
    assert start_utc is not None and end_utc is not None
    usage = await events.usage_per_day(runtime.store.sessions, start_utc, end_utc)
    days = [
        UsageDayOut(
            day=d.day,
            enrollments=d.enrollments,
            verifications=d.verifications,
            imports=d.imports,
            stream_minutes={kind: round(s / 60.0, 3) for kind, s in d.stream_seconds.items()},
        )
        for d in usage
    ]
    return UsageReport.model_validate(
        {"from": start_utc, "to": end_utc, "days": days, "totals": _counts(usage)}
    )


# -- retention -----------------------------------------------------------------------------------------
