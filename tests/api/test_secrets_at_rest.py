"""Secrets at rest through the API: after a subscription and a PBX instance are created, the SQLite files
hold neither the signing secret nor the SIP password in plain text (the raw bytes are read), yet the
server still signs with the one and registers with the other (against a real Kamailio); the data
directory and every file voxgate writes in it are owner-only."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.telephony import peers
from voxgate.service.runtime import Runtime
from voxgate.service.webhooks import sign, verify_signature
from voxgate.settings import Settings
from voxgate.store import crypto, files, pbx, subscriptions

pytestmark = pytest.mark.sqlite_only  # reads the SQLite files (tests/conftest.py)

WEBHOOK = "https://93.184.215.14/hooks/voxgate"  # a public address; nothing is sent to it here


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sip_bind_host": "127.0.0.1"})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Kamailio]:
    with peers.kamailio(tmp_path_factory.mktemp("kamailio")) as running:
        yield running


def _raw(settings: Settings) -> bytes:
    database = Path(settings.resolved_database_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in files.sqlite_files(database) if p.exists())


async def _registered(client: httpx.AsyncClient, auth: dict[str, str], pbx_id: str) -> dict[str, Any]:
    for _ in range(200):
        instance: dict[str, Any] = (await client.get(f"/api/v2/pbx/{pbx_id}", headers=auth)).json()
        if instance["registration"]["state"] in ("registered", "failed"):
            return instance
        await asyncio.sleep(0.05)
    raise AssertionError(f"never registered: {instance}")


@pytest.mark.asyncio
async def test_the_file_holds_no_plain_secret_and_the_server_still_uses_them(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    body = {"channel_uuid": "crm-line-9", "webhook": WEBHOOK, "type": "streams"}
    created = await client.post("/api/v2/subscription", json=body, headers=auth)
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    low, high = peers.free_port_range(16)
    account = {
        "name": "loopback kamailio",
        "host": "127.0.0.1",
        "port": proxy.port,
        "username": peers.USER,
        "password": peers.PASSWORD,
        "expires": 60,
        "rtp_port_min": low,
        "rtp_port_max": high,
    }
    instance = await client.post("/api/v2/pbx/", json=account, headers=auth)
    assert instance.status_code == 201, instance.text
    pbx_id = instance.json()["id"]

    raw = _raw(settings)
    assert [s for s in (secret, peers.PASSWORD) if s.encode() in raw] == [], "a secret in plain text"
    assert raw.count(crypto.PREFIX.encode()) >= 2

    # the SIP agent answers Kamailio's digest challenge with the decrypted password
    assert (await client.post(f"/api/v2/pbx/{pbx_id}/start", headers=auth)).status_code == 200
    registration = (await _registered(client, auth, pbx_id))["registration"]
    assert registration["state"] == "registered", registration
    await client.post(f"/api/v2/pbx/{pbx_id}/stop", headers=auth)

    # callbacks are signed with the secret the API handed out
    runtime: Runtime = app.state.runtime
    (stored,) = await subscriptions.find(runtime.store.sessions)
    assert stored.secret == secret
    assert verify_signature(
        secret, b"{}", "1700000000", sign(stored.secret, "1700000000", b"{}"), now=1700000000
    )
    (record,) = await pbx.list_all(runtime.store.sessions)
    assert record.password == peers.PASSWORD

    data = settings.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert {"voxgate.db", "voxgate.db-wal", "voxgate.db-shm", "secrets.key", "reset.secret"} <= set(modes)
    assert modes == {name: 0o600 for name in modes}, modes
