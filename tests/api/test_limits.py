"""Bodies are limited per endpoint before anything parses them, and paths with control characters reach
no endpoint (regressions: a 500 MB login body was parsed in full; ``/api/v2/maintenance/asp/%0A`` answered
with the profile list)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from voxgate.settings import Settings


@pytest.mark.asyncio
async def test_a_declared_body_over_the_limit_is_refused_unread(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = b"{" + b" " * (settings.max_json_bytes + 10) + b"}"
    response = await client.post("/rest-auth/login/", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert str(settings.max_json_bytes) in response.json()["detail"]


@pytest.mark.asyncio
async def test_a_chunked_body_is_stopped_at_the_limit(client: httpx.AsyncClient, settings: Settings) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"username": "'
        for _ in range(10_000):  # 640 MB if nobody stops it
            sent += 65536
            yield b"a" * 65536

    response = await client.post(
        "/rest-auth/login/", content=endless(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert sent <= settings.max_json_bytes + 2 * 65536, "the body was read past its limit"


@pytest.mark.asyncio
async def test_uploads_have_their_own_larger_limits(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    profile = b"x" * (settings.max_json_bytes * 2)  # above the JSON limit, far below the profile limit
    response = await client.post(
        "/api/v2/maintenance/asp/", headers=auth, files={"file": ("p.json", profile, "application/json")}
    )
    assert response.status_code == 400, response.text  # read and refused as not a profile, not as too large


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/api/v2/maintenance/asp/%0A", "/api/v2/streams%0A", "/health%00", "/api/v2/status%7F"])
async def test_control_characters_in_a_path_reach_no_endpoint(
    client: httpx.AsyncClient, auth: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=auth)
    assert response.status_code == 404, response.text
    assert "control characters" in response.json()["detail"]


@pytest.mark.asyncio
async def test_ordinary_requests_pass(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert (await client.get("/api/v2/maintenance/asp/", headers=auth)).status_code == 200
    assert (await client.get("/health")).status_code == 200
