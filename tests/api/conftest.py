"""The real app in process (httpx over ASGI, lifespan run), with a fresh store and a logged-in token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from voxgate.api.app import create_app
from voxgate.settings import Settings

ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", model_dir=model_dir, admin_password=ADMIN_PASSWORD, log_json=False
    )


@pytest_asyncio.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://voxgate", timeout=60) as c:
        yield c


@pytest_asyncio.fixture
async def auth(client: httpx.AsyncClient) -> dict[str, str]:
    """Headers with a fresh token of the admin account."""
    response = await client.post("/rest-auth/login/", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Token {response.json()['key']}"}
