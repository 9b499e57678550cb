from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr

from voxgate.api.app import create_app
from voxgate.service import housekeeping
from voxgate.service.runtime import Runtime
from voxgate.settings import Settings
from voxgate.store import accounts, events
from voxgate.store.tables import EventRow

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
SPAN = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}  # the logged events, not logins


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the smallest cost: the behaviour under test is the same, 100x faster."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def _log(app: FastAPI) -> None:
    """Twelve events a minute apart from T0, recorded through the store as the other routers do."""
    s = runtime_of(app).store.sessions
    plan: list[tuple[str, str, str | None, str | None, dict[str, Any]]] = [
        (events.STREAM_START, "ok", "s1", None, {}),
        (events.ENROLL, "created", "s1", "c1", {"speech_length": 21.5}),
        (events.STREAM_STOP, "ok", "s1", None, {"stream_type": "HTTP"}),
        (events.STREAM_START, "ok", "s2", None, {}),
        (events.VERIFY, "verified", "s2", "c1", {"score": 4.25}),
        (events.VERIFY, "insufficient_speech", "s2", "c1", {}),
        (events.VERIFY, "not_verified", "s2", '=HYPERLINK("x")', {}),
        (events.STREAM_STOP, "ok", "s2", None, {"stream_type": "SIP"}),
        (events.IMPORT, "ok", None, "c3", {"recordings": 2}),
        (events.VOICEPRINT_DELETE, "ok", None, "c1", {}),
        (events.MAINTENANCE, "ok", None, None, {"action": "lock"}),
        (events.ERROR, "failed", "s3", None, {"message": 'decoder, "quoted"\nnew line'}),
    ]
    for minute, (kind, outcome, stream, external_id, detail) in enumerate(plan):
        await events.record(
            s,
            kind,
            outcome,
            stream_uuid=stream,
            external_id=external_id,
            duration_s=90.0 if kind == events.STREAM_STOP else None,
            at=T0 + timedelta(minutes=minute),
            **detail,
        )


async def _get(client: httpx.AsyncClient, auth: dict[str, str], **params: object) -> httpx.Response:
    return await client.get("/api/v2/logging", params=params, headers=auth)  # type: ignore[arg-type]


def _ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()["events"] if e["time"].startswith("2025-")]


# -- /api/v2/logging -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_logging_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v2/logging")).status_code == 401
    assert (await client.get("/api/v2/logging_aggregate")).status_code == 401


@pytest.mark.asyncio
async def test_events_in_json(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await _log(app)
    response = await _get(client, auth, **SPAN)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 12 and body["page"] == 1 and body["page_size"] == 100
    assert response.headers["X-Total-Count"] == "12"
    verify = body["events"][4]
    assert verify == {
        "id": verify["id"],
        "time": "2025-03-14T09:04:00Z",
        "type": "verify",
        "stream": "s2",
        "external_id": "c1",
        "outcome": "verified",
        "duration_s": None,
        "detail": {"score": 4.25},
    }
    assert body["events"][2]["duration_s"] == 90.0


@pytest.mark.asyncio
async def test_filters(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await _log(app)
    everything = _ids(await _get(client, auth))
    assert len(everything) == 12
    first = everything[0]

    def ids(*offsets: int) -> list[int]:
        return [first + o for o in offsets]

    assert _ids(
        await _get(client, auth, **{"from": "2025-03-14T09:02:00Z", "to": "2025-03-14T09:04:00Z"})
    ) == ids(2, 3)
    # without a zone, UTC; with one, converted
    assert _ids(await _get(client, auth, **{"from": "2025-03-14T09:10:00"})) == ids(10, 11)
    assert _ids(await _get(client, auth, to="2025-03-14T10:01:00+01:00")) == ids(0)
    assert _ids(await _get(client, auth, type="verify")) == ids(4, 5, 6)
    assert _ids(await _get(client, auth, type=["verify", "enroll"])) == ids(1, 4, 5, 6)
    assert _ids(await _get(client, auth, external_id="c1")) == ids(1, 4, 5, 9)
    assert _ids(await _get(client, auth, stream="s2")) == ids(3, 4, 5, 6, 7)
    assert _ids(await _get(client, auth, stream="s2", type="verify", external_id="c1")) == ids(4, 5)
    nothing = await _get(client, auth, external_id="nobody")
    assert nothing.json()["total"] == 0 and nothing.json()["events"] == []


@pytest.mark.asyncio
async def test_pages(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await _log(app)
    params = {**SPAN, "page_size": 5}
    pages = [await _get(client, auth, page=page, **params) for page in (1, 2, 3, 4)]
    assert [len(p.json()["events"]) for p in pages] == [5, 5, 2, 0]
    assert {p.json()["total"] for p in pages} == {12}
    seen = [e["id"] for p in pages for e in p.json()["events"]]
    assert seen == sorted(seen) and len(set(seen)) == 12
    newest = await _get(client, auth, order="desc", page_size=2, **SPAN)
    assert [e["type"] for e in newest.json()["events"]] == ["error", "maintenance"]
    full = await _get(client, auth, page_size=1000)
    assert full.status_code == 200


@pytest.mark.asyncio
async def test_csv(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await _log(app)
    response = await _get(client, auth, format="csv", page_size=10, **SPAN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["X-Total-Count"] == "12"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.text.splitlines()[0] == "id,time,type,stream,external_id,outcome,duration_s,detail"
    assert len(rows) == 10
    assert rows[2]["duration_s"] == "90.0" and rows[2]["stream"] == "s1"
    assert rows[4]["time"] == "2025-03-14T09:04:00+00:00" and json.loads(rows[4]["detail"]) == {"score": 4.25}
    assert rows[6]["external_id"] == '\'=HYPERLINK("x")', "no formula reaches a spreadsheet"
    last = list(
        csv.DictReader(
            io.StringIO((await _get(client, auth, format="csv", page=2, page_size=10, **SPAN)).text)
        )
    )
    assert json.loads(last[-1]["detail"]) == {"message": 'decoder, "quoted"\nnew line'}, "quoting survives"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"from": "2025-03-15", "to": "2025-03-14"}, 400),
        ({"from": "yesterday"}, 422),
        ({"page": 0}, 422),
        ({"page_size": 1001}, 422),
        ({"page_size": 0}, 422),
        ({"format": "xml"}, 422),
        ({"order": "random"}, 422),
        ({"external_id": "x" * 257}, 422),
        ({"type": "t" * 65}, 422),
        ({"external_id": "a\x00b"}, 422),
        ({"stream": "\x00"}, 422),
        ({"from": "0001-01-01T00:00:00+14:00"}, 400),
        ({"to": "9999-12-31T23:59:59-14:00"}, 400),
    ],
)
async def test_bad_queries(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, object], status: int
) -> None:
    response = await _get(client, auth, **params)
    assert response.status_code == status
    assert response.json()["detail"]


# -- /api/v2/logging_aggregate -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aggregate_per_day(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    s = runtime_of(app).store.sessions
    day1 = datetime(2025, 3, 1, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    await events.record(s, events.ENROLL, events.CREATED, at=day1 + timedelta(hours=1))
    await events.record(s, events.ENROLL, "insufficient_speech", at=day1 + timedelta(hours=1))
    await events.record(s, events.VERIFY, "not_sure", at=day1 + timedelta(hours=2))
    await events.record(s, events.VERIFY, "verified", at=day1 + timedelta(hours=23, minutes=59))
    await events.record(s, events.VERIFY, "not_found", at=day1 + timedelta(hours=2))
    await events.record(
        s, events.STREAM_STOP, duration_s=90.0, stream_type="HTTP", at=day1 + timedelta(hours=3)
    )
    await events.record(
        s, events.STREAM_STOP, duration_s=45.0, stream_type="HTTP", at=day1 + timedelta(hours=4)
    )
    await events.record(
        s, events.STREAM_STOP, duration_s=20.0, stream_type="SIP", at=day1 + timedelta(hours=4)
    )
    await events.record(s, events.IMPORT, events.OK, at=day2)
    await events.record(s, events.IMPORT, events.FAILED, at=day2)
    await events.record(s, events.VERIFY, "verified", at=day2 + timedelta(days=5))  # after `to`

    response = await client.get(
        "/api/v2/logging_aggregate",
        params={"from": "2025-03-01", "to": "2025-03-03T00:00:00Z"},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.json() == {
        "from": "2025-03-01T00:00:00Z",
        "to": "2025-03-03T00:00:00Z",
        "days": [
            {
                "day": "2025-03-01",
                "enrollments": 1,
                "verifications": 2,
                "imports": 0,
                "stream_minutes": {"HTTP": 2.25, "SIP": 0.333},
            },
            {"day": "2025-03-02", "enrollments": 0, "verifications": 0, "imports": 1, "stream_minutes": {}},
        ],
        "totals": {
            "enrollments": 1,
            "verifications": 2,
            "imports": 1,
            "stream_minutes": {"HTTP": 2.25, "SIP": 0.333},
        },
    }


@pytest.mark.asyncio
async def test_aggregate_defaults_to_this_month(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    s = runtime_of(app).store.sessions
    now = datetime.now(UTC)
    await events.record(s, events.VERIFY, "verified", at=now - timedelta(seconds=5))
    await events.record(
        s,
        events.VERIFY,
        "verified",
        at=now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(seconds=1),
    )
    body = (await client.get("/api/v2/logging_aggregate", headers=auth)).json()
    assert body["from"].startswith(now.strftime("%Y-%m-01T00:00:00"))
    assert body["totals"]["verifications"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "params",
    [{"from": "2025-03-02", "to": "2025-03-01"}, {"from": "0001-01-01T00:00:00+01:00"}, {"to": "2025-01-01"}],
)
async def test_aggregate_bad_range(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get("/api/v2/logging_aggregate", params=params, headers=auth)
    assert response.status_code == 400
    assert response.json()["detail"]


@pytest.mark.asyncio
async def test_aggregate_over_all_time(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    params = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}
    response = await client.get("/api/v2/logging_aggregate", params=params, headers=auth)
    assert response.status_code == 200 and response.json()["days"] == []


@pytest.mark.asyncio
async def test_openapi_documents_what_is_counted_and_csv(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/swagger/openapi.json")).json()["paths"]
    aggregate = paths["/api/v2/logging_aggregate"]["get"]["description"]
    for counted in (
        "`enroll` events with outcome `ok` or `created`",
        "`verified`, `not_sure`, `not_verified`",
        "stream_minutes",
    ):
        assert counted in aggregate
    listing = paths["/api/v2/logging"]["get"]
    assert set(listing["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {p["name"] for p in listing["parameters"]} >= {
        "from",
        "to",
        "type",
        "external_id",
        "stream",
        "page",
        "page_size",
        "format",
    }


# -- retention -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_purge_old_events_and_expired_tokens(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    runtime = runtime_of(app)
    s = runtime.store.sessions
    now = datetime.now(UTC)
    await events.record(s, events.VERIFY, "verified", at=now - timedelta(days=91))
    await events.record(s, events.VERIFY, "verified", at=now - timedelta(days=89))
    expired = await accounts.issue_token(s, "admin", timedelta(seconds=-1))

    assert await housekeeping.purge_once(runtime.store.sessions, runtime.settings.event_retention_days) == (1, 1)

    kept = (await events.find(s, events.EventFilter(types=(events.VERIFY,)))).events
    assert [round((now - e.time) / timedelta(days=1)) for e in kept] == [89]
    assert await accounts.user_for_token(s, expired) is None
    assert (await client.get("/api/v2/logging", headers=auth)).status_code == 200, "valid tokens stay"
    assert await housekeeping.purge_once(runtime.store.sessions, runtime.settings.event_retention_days) == (0, 0)


def test_the_purge_task_runs_at_start_and_stops_with_the_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_password=SecretStr("a password"), log_json=False)

    async def run() -> asyncio.Task[None]:
        from voxgate.store.db import Store

        store = await Store(settings.resolved_database_url).open()
        async with store.sessions() as session, session.begin():
            session.add(
                EventRow(time=datetime.now(UTC) - timedelta(days=365), type="login", outcome="ok", detail={})
            )
        await store.close()

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            task = runtime_of(app).purge_task
            assert isinstance(task, asyncio.Task) and not task.done()
            for _ in range(100):  # the first purge runs right away, in the background
                page = await events.find(
                    runtime_of(app).store.sessions, events.EventFilter(types=(events.LOGIN,))
                )
                if page.total == 0:
                    break
                await asyncio.sleep(0.02)
            assert page.total == 0
        return task

    task = asyncio.run(run())
    assert task.cancelled()
