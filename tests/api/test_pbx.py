"""PBX instances through the API: stored, password never returned, started against a real Kamailio
(registration state in the instance and in /api/v2/status), started ones back after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.telephony import peers
from voxgate.api.app import create_app
from voxgate.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sip_bind_host": "127.0.0.1"})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Kamailio]:
    with peers.kamailio(tmp_path_factory.mktemp("kamailio")) as running:
        yield running


def account(proxy: peers.Kamailio, **overrides: Any) -> dict[str, Any]:
    low, high = peers.free_port_range(16)
    body: dict[str, Any] = {
        "name": "loopback kamailio",
        "host": "127.0.0.1",
        "port": proxy.port,
        "username": peers.USER,
        "password": peers.PASSWORD,
        "expires": 60,
        "rtp_port_min": low,
        "rtp_port_max": high,
    }
    body.update(overrides)
    return body


async def wait_state(
    client: httpx.AsyncClient, auth: dict[str, str], pbx_id: str, state: str
) -> dict[str, Any]:
    for _ in range(200):
        instance = (await client.get(f"/api/v2/pbx/{pbx_id}", headers=auth)).json()
        if instance["registration"]["state"] == state:
            return dict(instance)
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {state}: {instance}")


@pytest.mark.asyncio
async def test_create_list_get_delete_never_show_the_password(
    client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    assert (await client.get("/api/v2/pbx/")).status_code == 401
    created = await client.post("/api/v2/pbx/", json=account(proxy), headers=auth)
    assert created.status_code == 201, created.text
    pbx = created.json()
    assert pbx["started"] is False and pbx["registration"]["state"] == "stopped"
    assert pbx["codecs"] == ["PCMU", "PCMA"] and pbx["transport"] == "udp"
    listed = await client.get("/api/v2/pbx/", headers=auth)
    got = await client.get(f"/api/v2/pbx/{pbx['id']}", headers=auth)
    for response in (created, listed, got):
        assert peers.PASSWORD not in response.text and "password" not in response.text
    assert [i["id"] for i in listed.json()["instances"]] == [pbx["id"]]
    assert (await client.delete(f"/api/v2/pbx/{pbx['id']}", headers=auth)).status_code == 204
    for path in (f"/api/v2/pbx/{pbx['id']}", f"/api/v2/pbx/{pbx['id']}/start"):
        method = client.get if path.endswith(pbx["id"]) else client.post
        assert (await method(path, headers=auth)).status_code == 404


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        {"transport": "tcp"},
        {"rtp_port_min": 30000, "rtp_port_max": 29000},
        {"codecs": ["G729"]},
        {"codecs": []},
        {"host": "pbx.example.com\r\nVia: x"},
        {"username": "a b"},
        {"port": 0},
        {"password": ""},
        {"name": "two\nlines"},
        {"username": "nul\u0000"},
        {"expires": 5},
    ],
)
async def test_bad_instances_are_refused(
    bad: dict[str, Any], client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    response = await client.post("/api/v2/pbx/", json=account(proxy, **bad), headers=auth)
    assert response.status_code == 422, response.text


@pytest.mark.asyncio
async def test_start_registers_and_status_shows_it(
    client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    pbx = (await client.post("/api/v2/pbx/", json=account(proxy), headers=auth)).json()
    started = await client.post(f"/api/v2/pbx/{pbx['id']}/start", headers=auth)
    assert started.status_code == 200, started.text
    assert started.json()["started"] is True and started.json()["sip_port"]
    instance = await wait_state(client, auth, pbx["id"], "registered")
    assert instance["registration"]["registered_until"] > instance["registration"]["next_refresh"]
    status = (await client.get("/api/v2/status", headers=auth)).json()
    assert status["pbx"][pbx["id"]]["state"] == "registered"
    stopped = await client.post(f"/api/v2/pbx/{pbx['id']}/stop", headers=auth)
    assert stopped.json()["started"] is False and stopped.json()["registration"]["state"] == "stopped"
    assert (await client.get("/api/v2/status", headers=auth)).json()["pbx"] == {}


@pytest.mark.asyncio
async def test_a_wrong_password_fails_with_a_reason(
    client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    pbx = (await client.post("/api/v2/pbx/", json=account(proxy, password="wrong"), headers=auth)).json()
    await client.post(f"/api/v2/pbx/{pbx['id']}/start", headers=auth)
    instance = await wait_state(client, auth, pbx["id"], "failed")
    assert "refused" in instance["registration"]["reason"]
    assert instance["registration"]["next_refresh"] is not None
    assert (await client.post(f"/api/v2/pbx/{pbx['id']}/stop", headers=auth)).status_code == 200


@pytest.mark.asyncio
async def test_started_instances_come_back_after_a_restart(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, auth: dict[str, str], proxy: peers.Kamailio
) -> None:
    kept = (await client.post("/api/v2/pbx/", json=account(proxy, name="kept"), headers=auth)).json()
    idle = (await client.post("/api/v2/pbx/", json=account(proxy, name="idle"), headers=auth)).json()
    await client.post(f"/api/v2/pbx/{kept['id']}/start", headers=auth)
    await wait_state(client, auth, kept["id"], "registered")
    # a second server on the same store (the first one's shutdown runs after this test)
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        transport = httpx.ASGITransport(app=second, client=("127.0.0.1", 50001))
        async with httpx.AsyncClient(transport=transport, base_url="http://voxgate") as other:
            login = await other.post("/rest-auth/login/", json={"username": "admin", "password": _password()})
            headers = {"Authorization": f"Token {login.json()['key']}"}
            await wait_state(other, headers, kept["id"], "registered")
            assert (await other.get(f"/api/v2/pbx/{idle['id']}", headers=headers)).json()["registration"][
                "state"
            ] == "stopped"


def _password() -> str:
    from tests.api.conftest import ADMIN_PASSWORD

    return ADMIN_PASSWORD
