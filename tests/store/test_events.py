from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tests.postgres import StoreUrls
from voxgate.store import events
from voxgate.store.db import Store
from voxgate.store.tables import EventRow

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


@pytest_asyncio.fixture
async def store(store_url: StoreUrls) -> AsyncIterator[Store]:
    opened = await Store(store_url()).open()
    try:
        yield opened
    finally:
        await opened.close()


async def _log(store: Store) -> None:
    """Ten events a minute apart: streams s1/s2, customers c1/c2, several types."""
    plan = [
        (events.STREAM_START, "ok", "s1", None),
        (events.ENROLL, "created", "s1", "c1"),
        (events.STREAM_STOP, "ok", "s1", None),
        (events.STREAM_START, "ok", "s2", None),
        (events.VERIFY, "verified", "s2", "c1"),
        (events.VERIFY, "insufficient_speech", "s2", "c1"),
        (events.VERIFY, "not_verified", "s2", "c2"),
        (events.STREAM_STOP, "ok", "s2", None),
        (events.LOGIN, "failed", None, None),
        (events.VOICEPRINT_DELETE, "ok", None, "c2"),
    ]
    for minute, (kind, outcome, stream, external_id) in enumerate(plan):
        await events.record(
            store.sessions,
            kind,
            outcome,
            stream_uuid=stream,
            external_id=external_id,
            at=T0 + timedelta(minutes=minute),
        )


@pytest.mark.asyncio
async def test_record_and_read_back(store: Store) -> None:
    await events.record(
        store.sessions,
        events.STREAM_STOP,
        stream_uuid="s1",
        duration_s=61.5,
        stream_type="HTTP",
        path=Path("/tmp/x.wav"),
        id=uuid.UUID(int=1),
        when=T0,
    )
    page = await events.find(store.sessions, events.EventFilter())
    assert page.total == 1
    (event,) = page.events
    assert event.type == "stream_stop" and event.outcome == "ok" and event.stream_uuid == "s1"
    assert event.duration_s == 61.5 and event.time.tzinfo is not None
    assert abs(event.time - datetime.now(UTC)) < timedelta(seconds=10)
    assert event.detail == {
        "stream_type": "HTTP",
        "path": "/tmp/x.wav",
        "id": "00000000-0000-0000-0000-000000000001",
        "when": "2025-03-14 09:00:00+00:00",
    }, "values JSON cannot hold are stored as text instead of failing the write"


@pytest.mark.asyncio
async def test_values_json_cannot_hold(store: Store) -> None:
    await events.record(
        store.sessions, events.STREAM_STOP, duration_s=float("nan"), x=[float("inf"), {"y": float("nan")}]
    )
    (event,) = (await events.find(store.sessions, events.EventFilter())).events
    assert event.duration_s is None and event.detail == {"x": ["inf", {"y": "nan"}]}


@pytest.mark.asyncio
async def test_overlong_strings_are_cut_to_the_column_widths(store: Store) -> None:
    await events.record(store.sessions, "t" * 100, "o" * 100, stream_uuid="s" * 100, external_id="e" * 300)
    (event,) = (await events.find(store.sessions, events.EventFilter())).events
    assert (
        len(event.type),
        len(event.outcome),
        len(event.stream_uuid or ""),
        len(event.external_id or ""),
    ) == (
        64,
        64,
        64,
        256,
    )


@pytest.mark.asyncio
async def test_filters(store: Store) -> None:
    await _log(store)

    async def ids(**kwargs: object) -> list[int]:
        page = await events.find(store.sessions, events.EventFilter(**kwargs))  # type: ignore[arg-type]
        assert page.total == len(page.events)
        return [e.id for e in page.events]

    assert await ids() == list(range(1, 11))
    # start inclusive, end exclusive; naive times are UTC; other zones are converted
    assert await ids(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=4)) == [3, 4]
    assert await ids(start=datetime(2025, 3, 14, 9, 8)) == [9, 10]
    eastern = timezone(timedelta(hours=-5))
    assert await ids(end=datetime(2025, 3, 14, 4, 1, tzinfo=eastern)) == [1]
    assert await ids(types=(events.VERIFY,)) == [5, 6, 7]
    assert await ids(types=(events.VERIFY, events.ENROLL)) == [2, 5, 6, 7]
    assert await ids(external_id="c1") == [2, 5, 6]
    assert await ids(stream_uuid="s2") == [4, 5, 6, 7, 8]
    assert await ids(stream_uuid="s2", external_id="c2", types=(events.VERIFY,)) == [7]
    assert await ids(external_id="nobody") == []


@pytest.mark.asyncio
async def test_pages(store: Store) -> None:
    await _log(store)
    flt = events.EventFilter()
    pages = [await events.find(store.sessions, flt, offset=offset, limit=4) for offset in (0, 4, 8, 12)]
    assert [[e.id for e in p.events] for p in pages] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10], []]
    assert {p.total for p in pages} == {10}
    newest = await events.find(store.sessions, flt, limit=3, newest_first=True)
    assert [e.id for e in newest.events] == [10, 9, 8]


@pytest.mark.asyncio
async def test_purge_older_than_in_batches(store: Store) -> None:
    for day in range(10):
        await events.record(store.sessions, events.LOGIN, at=T0 - timedelta(days=day))
    deleted = await events.purge_older_than(store.sessions, T0 - timedelta(days=6, hours=12), batch=2)
    assert deleted == 3
    remaining = await events.find(store.sessions, events.EventFilter())
    assert remaining.total == 7
    assert min(e.time for e in remaining.events) == T0 - timedelta(days=6)
    assert await events.purge_older_than(store.sessions, T0 - timedelta(days=6, hours=12)) == 0


@pytest.mark.asyncio
async def test_usage_per_day_counts_only_invoiceable_actions(store: Store) -> None:
    day1 = datetime(2025, 3, 1, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    record = events.record
    s = store.sessions
    # day 1: the last second of the UTC day, and an event given in another zone that is still day 1 in UTC
    await record(
        s,
        events.ENROLL,
        events.CREATED,
        external_id="a",
        at=day1 + timedelta(hours=23, minutes=59, seconds=59),
    )
    await record(
        s,
        events.ENROLL,
        events.OK,
        external_id="b",
        at=datetime(2025, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2))),
    )
    await record(s, events.ENROLL, "insufficient_speech", external_id="c", at=day1 + timedelta(hours=1))
    await record(s, events.ENROLL, "exists", external_id="a", at=day1 + timedelta(hours=2))
    for verdict in events.VERDICTS:
        await record(s, events.VERIFY, verdict, at=day1 + timedelta(hours=3))
    await record(s, events.VERIFY, "not_found", at=day1 + timedelta(hours=3))
    await record(s, events.VERIFY, "insufficient_speech", at=day1 + timedelta(hours=3))
    await record(s, events.STREAM_STOP, duration_s=90.0, stream_type="HTTP", at=day1 + timedelta(hours=4))
    await record(
        s, events.STREAM_STOP, "timeout", duration_s=30.0, stream_type="HTTP", at=day1 + timedelta(hours=5)
    )
    await record(s, events.STREAM_STOP, duration_s=120.0, stream_type="SIP", at=day1 + timedelta(hours=5))
    await record(s, events.STREAM_STOP, duration_s=6.0, at=day1 + timedelta(hours=5))  # type not recorded
    await record(s, events.STREAM_START, stream_type="HTTP", at=day1 + timedelta(hours=5))
    # day 2: the first moment of the day
    await record(s, events.IMPORT, events.OK, external_id="d", at=day2)
    await record(s, events.IMPORT, "failed", external_id="e", at=day2)
    await record(s, events.VERIFY, "verified", at=day2 + timedelta(hours=1))
    await record(s, events.LOGIN, at=day2 + timedelta(hours=1))
    # day 3: nothing invoiceable
    await record(s, events.LOGIN, at=day2 + timedelta(days=1))
    # outside the range
    await record(s, events.ENROLL, events.CREATED, at=day1 - timedelta(microseconds=1))
    await record(s, events.ENROLL, events.CREATED, at=day2 + timedelta(days=3))

    usage = await events.usage_per_day(s, day1, day2 + timedelta(days=3))

    assert [u.day for u in usage] == [date(2025, 3, 1), date(2025, 3, 2)]
    first, second = usage
    assert (first.enrollments, first.verifications, first.imports) == (2, 3, 0)
    assert first.stream_seconds == {"HTTP": 120.0, "SIP": 120.0, events.UNKNOWN_STREAM_TYPE: 6.0}
    assert (second.enrollments, second.verifications, second.imports) == (0, 1, 1)
    assert second.stream_seconds == {}

    partial = await events.usage_per_day(s, day1 + timedelta(hours=4, minutes=30), day2)
    assert [(u.day, u.enrollments, u.verifications, u.stream_seconds) for u in partial] == [
        (date(2025, 3, 1), 2, 0, {"SIP": 120.0, "HTTP": 30.0, events.UNKNOWN_STREAM_TYPE: 6.0})
    ]
    assert await events.usage_per_day(s, day1 - timedelta(days=30), day1 - timedelta(days=1)) == []


def test_utc_day_compiles_for_both_databases() -> None:
    statement = select(events.utc_day(EventRow.time))
    assert "date(events.time)" in str(statement.compile(dialect=sqlite.dialect()))
    assert "to_char((events.time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')" in str(
        statement.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]  # psycopg2's __init__ is unannotated
    )


def test_every_event_type_is_named_once() -> None:
    assert len(set(events.EVENT_TYPES)) == len(events.EVENT_TYPES) == 13
    assert set(events.BILLED_OUTCOMES) <= set(events.EVENT_TYPES)


@pytest.mark.asyncio
async def test_events_recorded_soon_share_one_transaction_and_readers_see_them(store: Store) -> None:
    commits = 0

    def count(*_: object) -> None:
        nonlocal commits
        commits += 1

    sa_event.listen(store.engine.sync_engine, "commit", count)
    for n in range(40):  # polls arriving over 80 ms, well inside events.GATHER_S
        events.record_soon(
            store.sessions, events.VERIFY, "verified", stream_uuid=f"s{n % 4}", external_id="c1"
        )
        await asyncio.sleep(0.002)
    page = await events.find(store.sessions, events.EventFilter(types=(events.VERIFY,)))
    assert page.total == 40, "a reader flushes the queued events first"
    assert commits == 1, f"40 queued events took {commits} transactions"
