"""Maintenance mode through the real app: lock/unlock (GET and POST), 423 while locked, persisted across a
restart, force_off closing every stream, and the events they leave."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from voxgate.api.app import create_app
from voxgate.api.deps import Unlocked
from voxgate.settings import Settings
from voxgate.store import settings_kv
from voxgate.store.tables import EventRow

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


def _probe(app: FastAPI) -> None:
    """A route that refuses in maintenance mode the way enroll, verify, import and new streams do."""

    async def probe() -> dict[str, bool]:
        return {"ok": True}

    app.add_api_route("/test/unlocked-only", probe, methods=["GET"], dependencies=[Unlocked])


async def _actions(app: FastAPI) -> list[str]:
    async with app.state.runtime.store.sessions() as session:
        rows = await session.scalars(
            select(EventRow).where(EventRow.type == "maintenance").order_by(EventRow.id)
        )
        return [row.detail["action"] for row in rows]


@pytest.mark.asyncio
async def test_lock_refuses_with_423_until_unlock(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    _probe(app)
    sessions = app.state.runtime.store.sessions
    assert (await client.get("/test/unlocked-only")).status_code == 200

    locked = await client.get("/api/v2/lock", headers=auth)
    assert locked.status_code == 200, locked.text
    assert locked.json()["maintenance"] is True
    assert await settings_kv.get(sessions, settings_kv.MAINTENANCE) is True
    refused = await client.get("/test/unlocked-only")
    assert refused.status_code == 423 and "maintenance mode" in refused.json()["detail"]
    stream = await client.post("/api/v2/stream/HTTP", headers=auth, json={"info": {}, "frequency": 8000})
    assert stream.status_code == 423, "no new stream while locked"

    again = await client.post("/api/v2/lock", headers=auth)  # POST too; idempotent
    assert again.status_code == 200 and again.json()["maintenance"] is True
    assert "unchanged" in again.json()["detail"]

    unlocked = await client.get("/api/v2/maintenance/unlock", headers=auth)
    assert unlocked.status_code == 200 and unlocked.json()["maintenance"] is False
    assert await settings_kv.get(sessions, settings_kv.MAINTENANCE) is False
    assert (await client.get("/test/unlocked-only")).status_code == 200
    assert (await client.post("/api/v2/maintenance/unlock", headers=auth)).json()["maintenance"] is False

    assert await _actions(app) == ["lock", "lock", "unlock", "unlock"]


@pytest.mark.asyncio
async def test_maintenance_mode_survives_a_restart(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    assert (await client.get("/api/v2/lock", headers=auth)).status_code == 200
    second = create_app(settings)  # another process on the same store
    async with second.router.lifespan_context(second):
        assert second.state.runtime.locked is True
    assert (await client.get("/api/v2/maintenance/unlock", headers=auth)).status_code == 200
    third = create_app(settings)
    async with third.router.lifespan_context(third):
        assert third.state.runtime.locked is False


@pytest.mark.asyncio
async def test_force_off_closes_every_stream(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for _ in range(2):
        opened = await client.post("/api/v2/stream/HTTP", headers=auth, json={"info": {"callid": "x"}})
        assert opened.status_code == 201, opened.text
    assert len(app.state.runtime.streams) == 2

    response = await client.post("/api/v2/maintenance/force_off", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["closed"] == 2 and response.json()["maintenance"] is False
    assert len(app.state.runtime.streams) == 0
    listed = await client.get("/api/v2/streams", headers=auth)
    assert listed.json()["streams"] == []
    assert (await client.post("/api/v2/maintenance/force_off", headers=auth)).json()["closed"] == 0
    assert await _actions(app) == ["force_off", "force_off"]


@pytest.mark.asyncio
async def test_maintenance_needs_a_token(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v2/lock"),
        ("POST", "/api/v2/lock"),
        ("GET", "/api/v2/maintenance/unlock"),
        ("POST", "/api/v2/maintenance/force_off"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, (method, path)
