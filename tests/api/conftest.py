"""The real app in process (httpx over ASGI, lifespan run), with a fresh store and a logged-in token.

The store is SQLite in the test's data directory. The modules whose subject is what the store keeps run on
PostgreSQL too (marked ``both_stores``; their ``settings`` then also name a fresh PostgreSQL database):
test_auth (account, tokens, login events), test_backup, test_logging (the event log, billing usage),
test_maintenance (the persisted lock), test_profiles, test_snapshots and test_voiceprints (enroll, verify,
import). The rest of tests/api runs on SQLite only: what they test is above the store, and their
repositories' PostgreSQL behaviour is covered by tests/store (all of it on both stores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from voxgate.api.app import create_app
from voxgate.settings import Settings

ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path, store_backend: str, request: pytest.FixtureRequest) -> Settings:
    """The app's settings; its store is SQLite in the data directory, or in a module marked ``both_stores``
    also a fresh PostgreSQL database (``[postgresql]``; tests/conftest.py)."""
    database_url = request.getfixturevalue("store_url")() if store_backend == "postgresql" else None
    return Settings(
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        admin_password=SecretStr(ADMIN_PASSWORD),
        log_json=False,
        database_url=database_url,
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


def _text(data: Path) -> str:
    return (data / "server.log").read_text()


@pytest.fixture(scope="module")
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[str]:
    """A real `voxgate serve` on a free loopback port with a fresh data directory; its base URL.

    The admin password is the test module's ``PASSWORD``. The server is stopped after the module.
    """
    data = tmp_path_factory.mktemp("server")
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(data),
        "VOXGATE_MODEL_DIR": str(model_dir),
        "VOXGATE_ADMIN_PASSWORD": request.module.PASSWORD,
        "VOXGATE_LOG_LEVEL": "warning",
    }
    log = (data / "server.log").open("w")
    process = subprocess.Popen(  # port 0: the system picks a free port, the server prints it
        [sys.executable, "-m", "voxgate", "serve", "--port", "0"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"voxgate: listening on (http://127\.0\.0\.1:\d+)", _text(data))):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(_text(data))
            time.sleep(0.1)
        base = found.group(1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
