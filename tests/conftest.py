"""Shared fixtures: the real speech beside the repository, prepared models, and the stores tests run on.

Tests marked ``both_stores`` that take the ``store_backend`` fixture (directly or through ``store_url`` or
tests/api's ``settings``) run twice: on SQLite and on PostgreSQL (``[postgresql]``, also marked
``postgresql``: ``-m "not postgresql"`` leaves those out). The PostgreSQL server is a throwaway one started
once per session, only when a test needs it (``tests/postgres.py``); without PostgreSQL those tests fail
and say which script installs it. Every other test runs on SQLite only; with
``VOXGATE_TEST_POSTGRESQL_EVERYWHERE=1`` every test that takes ``store_backend`` runs on both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.postgres import PostgresMissing, PostgresServer, StoreUrls, ensure_installed
from tests.redis_server import RedisMissing, RedisServer
from tests.redis_server import ensure_installed as ensure_redis
from voxgate.settings import Settings

T = TypeVar("T")

STORES = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql))
# set to 1: every test that takes store_backend runs on both (all of tests/api, ~3 min more), for a deeper check
EVERY_TEST = "VOXGATE_TEST_POSTGRESQL_EVERYWHERE"

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
LIBRI = SPEECH / "librispeech_test_other"


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.fail(
            f"real speech is missing: expected ../shared/data/speech beside the repository ({SPEECH})"
        )
    return SPEECH


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The prepared model directory (VOXGATE_MODEL_DIR or the default); prepared here if it is not yet."""
    from voxgate.audio.vad import install_vad_model
    from voxgate.biometrics.prepare.export import prepare_models

    directory = Settings().model_dir
    install_vad_model(directory)
    prepare_models(directory)
    return directory


def libri_files(speaker: str) -> list[Path]:
    return sorted((LIBRI / speaker).glob("*.flac"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("sqlite_only"):
        return
    if metafunc.definition.get_closest_marker("both_stores") or os.environ.get(EVERY_TEST) == "1":
        metafunc.parametrize("store_backend", STORES, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The store under test: ``sqlite`` unless the test is marked ``both_stores`` (then each in turn)."""
    return str(getattr(request, "param", "sqlite"))


def _installed(ensure: Callable[[], T], missing: type[Exception]) -> T:
    """What ``ensure`` finds (installing a server's Debian package if need be); if it raises ``missing``,
    the test fails with its message alone (how to install it), not a traceback."""
    try:
        return ensure()
    except missing as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (started on first use)."""
    server = PostgresServer.start(_installed(ensure_installed, PostgresMissing))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreUrls]:
    """URLs of fresh stores on the store under test (``StoreUrls``): ``store_url()``, ``store_url("b")``."""
    server = request.getfixturevalue("postgres_server") if store_backend == "postgresql" else None
    urls = StoreUrls(store_backend, tmp_path, server)
    try:
        yield urls
    finally:
        urls.drop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway Redis server for the session (started on first use; ``tests/redis_server.py``)."""
    server = RedisServer.start(_installed(ensure_redis, RedisMissing))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (flushed before the test)."""
    redis_server.flush()
    return redis_server.url()
