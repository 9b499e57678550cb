"""The paths Voice Verify's guide writes without ``/api/v2``: each answers as its original, with and without
a token, gets the original's body limit, and stays out of the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from voxgate.api.aliases import ALIASES, PREFIX
from voxgate.settings import Settings

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LIBRI = SHARED / "data" / "speech" / "librispeech_test_other"
GUIDES = ("voice-verify-1.5.1.txt", "voice-verify-1.7.6-multi-server.txt")  # in ../shared/reference
REFERENCE_PATHS = re.compile(r"(?:GET|POST|DELETE) (/[a-z_-]+(?:/[a-zA-Z_{}]+)*/?)")
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"
# A body per original that changes nothing, so that the original and then its alias meet the same state.
BODIES: dict[str, dict[str, Any]] = {
    "/enroll": {"json": {"uuid": UNKNOWN_UUID, "external_id": "nobody"}},
    "/verify": {"json": {"uuid": UNKNOWN_UUID, "external_id": "nobody"}},
    "/voiceprint": {"json": {"external_id": "nobody"}},
    "/leave": {"json": {"external_id": "nobody"}},
    "/streams": {"json": {"info": {"callid": "none"}}},
    "/pbx/": {"json": {"name": "no host"}},
}
VOLATILE = {"/logging_aggregate": "to", "/snapshot/generate": "created"}  # the moment they were asked


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # a JSON body may be tiny here: an import through its alias must still get the import's limit
    return settings.model_copy(update={"min_enroll_speech_s": 6.0, "max_json_bytes": 4096})


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, alias) of every operation the originals serve, from the app's own OpenAPI document."""
    paths = app.openapi()["paths"]
    return [(method.upper(), alias) for alias in ALIASES for method in paths[PREFIX + alias]]


def filled(template: str) -> str:
    return re.sub(r"\{\w+\}", "unknown", template)


async def both(
    client: httpx.AsyncClient, method: str, alias: str, **request: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The original's answer (asked twice: a state it sets is set before the alias is asked) and the alias's."""
    path = filled(alias)
    await client.request(method, PREFIX + path, **request)
    original = await client.request(method, PREFIX + path, **request)
    return original, await client.request(method, path, **request)


def test_every_path_the_guide_writes_without_the_prefix_is_an_alias(settings: Settings) -> None:
    from voxgate.api.app import create_app

    guides = "\n".join((SHARED / "reference" / guide).read_text() for guide in GUIDES)
    written = {m.group(1).replace("{ID}", "{pbx_id}") for m in REFERENCE_PATHS.finditer(guides)}
    unprefixed = {p for p in written if not p.startswith(("/api/", "/rest-auth/"))}
    assert unprefixed == set(ALIASES)
    schema_paths = set(create_app(settings).openapi()["paths"])
    assert {PREFIX + alias for alias in ALIASES} <= schema_paths, "every alias has an original"
    assert not set(ALIASES) & schema_paths, "aliases stay out of the OpenAPI document"


@pytest.mark.asyncio
async def test_an_alias_without_a_token_is_refused_as_its_original(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for method, alias in operations(app):
        original, aliased = await both(client, method, alias, **BODIES.get(alias, {}))
        expected = 403 if alias == "/maintenance/reset_password" else 401  # a host secret, not a token
        assert aliased.status_code == original.status_code == expected, (method, alias, aliased.text)
        assert aliased.json() == original.json()


@pytest.mark.asyncio
async def test_every_alias_answers_as_its_original(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    answered = set()
    for method, alias in operations(app):
        original, aliased = await both(client, method, alias, headers=auth, **BODIES.get(alias, {}))
        assert aliased.status_code == original.status_code, (method, alias, aliased.text)
        assert aliased.headers["content-type"] == original.headers["content-type"]
        if alias in VOLATILE:
            aliased_json, original_json = aliased.json(), original.json()
            assert aliased_json.pop(VOLATILE[alias]) and original_json.pop(VOLATILE[alias])
            assert aliased_json == original_json, (method, alias)
        else:
            assert aliased.content == original.content, (method, alias)
        answered.add(aliased.status_code)
    assert {200, 404, 422} <= answered, "successes and refusals alike"


@pytest.mark.asyncio
async def test_aliases_change_what_the_originals_see(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    recording = sorted((LIBRI / "3005").glob("*.flac"))[0]  # 8.4 s, 156 kB: far above the 4 kB JSON limit
    files = [("files", (recording.name, recording.read_bytes(), "audio/flac"))]
    imported = await client.post("/import", data={"external_id": "dave"}, files=files, headers=auth)
    assert imported.status_code == 201, imported.text
    found = await client.post("/api/v2/voiceprint", json={"external_id": "dave"}, headers=auth)
    assert found.json()["exists"] is True and found.json()["source"]["files"] == [recording.name]
    left = await client.request("DELETE", "/leave", json={"external_id": "dave"}, headers=auth)
    assert left.status_code == 200, left.text
    gone = await client.post("/api/v2/voiceprint", json={"external_id": "dave"}, headers=auth)
    assert gone.json()["exists"] is False

    assert (await client.post("/lock", headers=auth)).json()["maintenance"] is True
    assert (await client.post("/api/v2/stream/HTTP", headers=auth)).status_code == 423
    assert (await client.get("/maintenance/unlock", headers=auth)).json()["maintenance"] is False
    assert (await client.post("/api/v2/stream/HTTP", headers=auth)).status_code == 201

    body = {"host": "127.0.0.1", "username": "voxgate", "password": "secret-1"}
    created = await client.post("/pbx/", json=body, headers=auth)
    assert created.status_code == 201, created.text
    pbx_id = created.json()["id"]
    assert (await client.get(f"/api/v2/pbx/{pbx_id}", headers=auth)).status_code == 200
    assert (await client.delete(f"/pbx/{pbx_id}", headers=auth)).status_code == 204
    assert (await client.get(f"/api/v2/pbx/{pbx_id}", headers=auth)).status_code == 404

    near_misses = ["/lock/", "/pbx", "/pbx/a/b", "/api/v2/api/v2/lock", "/lockx", "/Lock"]
    for path in near_misses:  # only the listed paths are aliases
        assert (await client.get(path, headers=auth, follow_redirects=False)).status_code == 404, path
