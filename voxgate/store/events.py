"""The event log: every action and error, written as it happens; the source of billing aggregates.

Use the type and outcome constants below when recording, so that the log and the billing aggregate
(:func:`usage_per_day`) agree on names::

    await events.record(sessions, events.VERIFY, verdict, stream_uuid=uuid, external_id=eid, score=llr)
    await events.record(sessions, events.STREAM_STOP, stream_uuid=uuid, duration_s=61.2, stream_type="HTTP")

What the billing aggregate counts (and so what each door must record):

- ``enroll`` events whose outcome is ``ok`` or ``created`` (an enrollment that stored a voiceprint);
- ``verify`` events whose outcome is a verdict: ``verified``, ``not_sure`` or ``not_verified`` (record one
  event per verify request that produced a verdict; not-enough-speech or unknown voiceprint are other
  outcomes and not counted);
- ``import`` events whose outcome is ``ok`` or ``created``;
- ``stream_stop`` events: their ``duration_s`` (seconds the stream was open), summed per
  ``detail["stream_type"]`` (``HTTP``, ``WebSocket``, ``SIP``, ...; missing → ``unknown``), whatever the outcome.

Times are stored in UTC. Days are UTC days.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, String, and_, delete, func, insert, or_, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from voxgate.store.db import DbSessions, unstorable
from voxgate.store.tables import EventRow

log = logging.getLogger(__name__)

# -- event types ---------------------------------------------------------------------------------------
STREAM_START = "stream_start"
STREAM_STOP = "stream_stop"  # duration_s = seconds the stream was open; detail stream_type
ENROLL = "enroll"
VERIFY = "verify"
IMPORT = "import"
VOICEPRINT_DELETE = "voiceprint_delete"
LOGIN = "login"
LOGOUT = "logout"
PASSWORD_CHANGE = "password_change"
PASSWORD_RESET = "password_reset"
MAINTENANCE = "maintenance"  # lock, unlock, force_off, backup, restore, profile changes (detail action)
ERROR = "error"
WEBHOOK = "webhook"  # a callback that failed after its retries (failed) or left a full queue (dropped)

EVENT_TYPES = (
    STREAM_START,
    STREAM_STOP,
    ENROLL,
    VERIFY,
    IMPORT,
    VOICEPRINT_DELETE,
    LOGIN,
    LOGOUT,
    PASSWORD_CHANGE,
    PASSWORD_RESET,
    MAINTENANCE,
    ERROR,
    WEBHOOK,
)

# -- outcomes ------------------------------------------------------------------------------------------
OK = "ok"
CREATED = "created"
FAILED = "failed"
DROPPED = "dropped"
VERDICTS = ("verified", "not_sure", "not_verified")

# what usage_per_day counts, per type
BILLED_OUTCOMES: dict[str, tuple[str, ...]] = {
    ENROLL: (OK, CREATED),
    VERIFY: VERDICTS,
    IMPORT: (OK, CREATED),
}

# column widths of the events table (PostgreSQL refuses longer strings; SQLite would keep them)
_TYPE_LEN, _OUTCOME_LEN, _STREAM_LEN, _EXTERNAL_ID_LEN = 64, 64, 64, 256


def _text(value: str, width: int) -> str:
    """A string as the event log keeps it: cut to its column's width, a NUL character (which PostgreSQL's
    text cannot hold; a request may carry one) shown as U+FFFD, on either store alike."""
    return value[:width].replace("\x00", "\ufffd")


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (that is how SQLite hands them back)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _json_safe(detail: dict[str, Any]) -> dict[str, Any]:
    """The detail as plain JSON (paths, UUIDs, datetimes become strings), so a write never fails on it."""
    safe: dict[str, Any] = _finite(json.loads(json.dumps(detail, default=str)))
    return safe


def _row(
    type: str,
    outcome: str,
    stream_uuid: str | None,
    external_id: str | None,
    duration_s: float | None,
    at: datetime | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    return {
        "time": _utc(at) if at is not None else datetime.now(UTC),
        "type": _text(type, _TYPE_LEN),
        "stream_uuid": None if stream_uuid is None else _text(str(stream_uuid), _STREAM_LEN),
        "external_id": None if external_id is None else _text(external_id, _EXTERNAL_ID_LEN),
        "outcome": _text(outcome, _OUTCOME_LEN),
        "duration_s": duration_s if duration_s is None or math.isfinite(duration_s) else None,
        "detail": _json_safe(detail),
    }


async def record(
    sessions: DbSessions,
    type: str,
    outcome: str = OK,
    *,
    stream_uuid: str | None = None,
    external_id: str | None = None,
    duration_s: float | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Append one event (its own transaction, committed when this returns). ``type`` is one of the
    constants above; ``at`` defaults to now; any other keyword goes into ``detail`` (JSON)."""
    row = _row(type, outcome, stream_uuid, external_id, duration_s, at, detail)
    async with sessions() as session, session.begin():
        await session.execute(insert(EventRow), [row])


def record_soon(
    sessions: DbSessions,
    type: str,
    outcome: str = OK,
    *,
    stream_uuid: str | None = None,
    external_id: str | None = None,
    duration_s: float | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Append one event without waiting for the write: for the hot path (a verify poll twice a second
    per stream). Events queued meanwhile are written together in one transaction (group commit).
    Every reader here (:func:`find`, :func:`usage_per_day`, :func:`purge_older_than`) and the server's
    shutdown call :func:`flush` first, so nothing is lost or unseen; a crash loses at most the events of
    the write in progress."""
    row = _row(type, outcome, stream_uuid, external_id, duration_s, at, detail)
    writer = _writers.get(sessions)
    loop = asyncio.get_running_loop()
    if writer is None or writer.loop is not loop:
        writer = _writers[sessions] = _Writer(sessions, loop)
    writer.rows.append(row)
    if writer.task is None or writer.task.done():
        writer.task = loop.create_task(writer.run(), name="event-writer")


GATHER_S = 0.25  # how long queued events wait to share a transaction (and what a crash may lose)


class _Writer:
    def __init__(self, sessions: DbSessions, loop: asyncio.AbstractEventLoop) -> None:
        self.sessions = sessions
        self.loop = loop
        self.rows: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await asyncio.sleep(GATHER_S)  # let a moment's polls gather: one transaction instead of dozens
        while self.rows:
            rows, self.rows = self.rows, []
            try:
                async with self.sessions() as session, session.begin():
                    await session.execute(insert(EventRow), rows)
            except Exception:  # the store is down or closing: say so, never break the caller
                log.exception("%d events could not be written", len(rows))


_writers: weakref.WeakKeyDictionary[DbSessions, _Writer] = weakref.WeakKeyDictionary()


def queued(sessions: DbSessions) -> int:
    """Events :func:`record_soon` queued that are not written yet (the monitoring gauge)."""
    writer = _writers.get(sessions)
    return 0 if writer is None else len(writer.rows)


async def flush(sessions: DbSessions) -> None:
    """Wait until the events queued by :func:`record_soon` are written."""
    writer = _writers.get(sessions)
    if writer is None or writer.loop is not asyncio.get_running_loop():
        return
    while writer.task is not None and not writer.task.done():
        await asyncio.shield(writer.task)


# -- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: int
    time: datetime  # UTC
    type: str
    stream_uuid: str | None
    external_id: str | None
    outcome: str
    duration_s: float | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class EventFilter:
    """Which events: ``start`` inclusive, ``end`` exclusive; empty ``types`` means every type."""

    start: datetime | None = None
    end: datetime | None = None
    types: tuple[str, ...] = ()
    external_id: str | None = None
    stream_uuid: str | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    total: int  # events matching the filter, over all pages


def _conditions(flt: EventFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.start is not None:
        conditions.append(EventRow.time >= _utc(flt.start))
    if flt.end is not None:
        conditions.append(EventRow.time < _utc(flt.end))
    if flt.types:
        conditions.append(EventRow.type.in_(flt.types))
    if flt.external_id is not None:
        conditions.append(EventRow.external_id == flt.external_id)
    if flt.stream_uuid is not None:
        conditions.append(EventRow.stream_uuid == flt.stream_uuid)
    return conditions


def _event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        time=_utc(row.time),
        type=row.type,
        stream_uuid=row.stream_uuid,
        external_id=row.external_id,
        outcome=row.outcome,
        duration_s=row.duration_s,
        detail=dict(row.detail or {}),
    )


async def find(
    sessions: DbSessions, flt: EventFilter, *, offset: int = 0, limit: int = 100, newest_first: bool = False
) -> EventPage:
    """One page of the events matching ``flt`` in time order (ties by id), and how many match in all."""
    await flush(sessions)
    conditions = _conditions(flt)
    order = (EventRow.time.desc(), EventRow.id.desc()) if newest_first else (EventRow.time, EventRow.id)
    async with sessions() as session:
        if unstorable(session, flt.external_id, flt.stream_uuid, *flt.types):
            return EventPage(events=[], total=0)
        total = await session.scalar(select(func.count()).select_from(EventRow).where(*conditions))
        rows = await session.scalars(
            select(EventRow).where(*conditions).order_by(*order).offset(max(offset, 0)).limit(max(limit, 0))
        )
        return EventPage(events=[_event(row) for row in rows], total=int(total or 0))


async def purge_older_than(sessions: DbSessions, cutoff: datetime, *, batch: int = 10_000) -> int:
    """Delete events older than ``cutoff``, in batches (short write transactions); the number deleted."""
    await flush(sessions)
    deleted = 0
    while True:
        async with sessions() as session, session.begin():
            doomed = select(EventRow.id).where(EventRow.time < _utc(cutoff)).limit(batch)
            result = await session.execute(delete(EventRow).where(EventRow.id.in_(doomed)))
        count = int(cast(CursorResult[Any], result).rowcount)
        deleted += count
        if count < batch:
            return deleted


# -- billing -------------------------------------------------------------------------------------------


class utc_day(FunctionElement[str]):  # lower case: a SQL function
    """The UTC calendar day of a timestamp as ``YYYY-MM-DD`` text, portable across our databases."""

    type = String()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day)
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC (record() writes UTC)
    return f"date({compiler.process(element.clauses, **kw)})"


@dataclass
class DayUsage:
    """Invoiceable actions on one UTC day (see the module docstring for what counts)."""

    day: date
    enrollments: int = 0
    verifications: int = 0
    imports: int = 0
    stream_seconds: dict[str, float] = field(default_factory=dict)  # per stream type


UNKNOWN_STREAM_TYPE = "unknown"


def _billed_counts(start: datetime, end: datetime) -> Select[str, str, int]:
    day = utc_day(EventRow.time)
    billed = or_(
        *(
            and_(EventRow.type == kind, EventRow.outcome.in_(outcomes))
            for kind, outcomes in BILLED_OUTCOMES.items()
        )
    )
    return (
        select(day, EventRow.type, func.count())
        .where(EventRow.time >= _utc(start), EventRow.time < _utc(end), billed)
        .group_by(day, EventRow.type)
    )


def _stream_seconds(start: datetime, end: datetime) -> Select[str, str | None, float | None]:
    # grouped over a subquery: the JSON key is a bound parameter, and PostgreSQL would not see the
    # select's `detail ->> $1` and the GROUP BY's `detail ->> $2` as the same expression
    stops = (
        select(
            utc_day(EventRow.time).label("day"),
            EventRow.detail["stream_type"].as_string().label("stream_type"),
            EventRow.duration_s,
        )
        .where(
            EventRow.time >= _utc(start),
            EventRow.time < _utc(end),
            EventRow.type == STREAM_STOP,
            EventRow.duration_s.is_not(None),
        )
        .subquery()
    )
    return select(stops.c.day, stops.c.stream_type, func.sum(stops.c.duration_s)).group_by(
        stops.c.day, stops.c.stream_type
    )


async def usage_per_day(sessions: DbSessions, start: datetime, end: datetime) -> list[DayUsage]:
    """Invoiceable actions per UTC day in [start, end), days in order; days without any are left out."""
    await flush(sessions)
    days: dict[str, DayUsage] = {}

    def usage(day: str) -> DayUsage:
        if day not in days:
            days[day] = DayUsage(day=date.fromisoformat(day))
        return days[day]

    async with sessions() as session:
        for day, kind, count in await session.execute(_billed_counts(start, end)):
            entry = usage(day)
            if kind == ENROLL:
                entry.enrollments += int(count)
            elif kind == VERIFY:
                entry.verifications += int(count)
            elif kind == IMPORT:
                entry.imports += int(count)
        seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for day, stream_type, total in await session.execute(_stream_seconds(start, end)):
            seconds[day][stream_type or UNKNOWN_STREAM_TYPE] += float(total or 0.0)
    for day, per_type in seconds.items():
        usage(day).stream_seconds = dict(sorted(per_type.items()))
    return [days[day] for day in sorted(days)]
