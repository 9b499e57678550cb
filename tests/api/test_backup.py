"""Backup and restore through the real app: backup → change → restore, and bad files refused with the
store left exactly as it was."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from voxgate.biometrics.models import read_card
from voxgate.biometrics.profile import shipped_profile
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.store import settings_kv, voiceprints
from voxgate.store.backup import canonical, create_backup
from voxgate.store.snapshots import list_entries

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)


def _voiceprint(model_dir: Path, seed: int) -> Voiceprint:
    rng = np.random.default_rng(seed)
    embeddings = {}
    for model_id in ("ecapa", "campplus"):
        card = read_card(model_dir, model_id)
        embeddings[model_id] = Embedding(
            model_id, card.version, l2_normalise(rng.standard_normal(card.dimension).astype(np.float32))
        )
    return Voiceprint(embeddings, 25.0)


async def _state(app: FastAPI) -> dict[str, Any]:
    """Everything a restore may touch: voiceprints (exact bytes), profiles, settings, subscriptions."""
    sessions = app.state.runtime.store.sessions
    payload = (await create_backup(sessions))["payload"]
    return {"voiceprints": await list_entries(sessions), "tables": payload["tables"]}


async def _upload_profile(client: httpx.AsyncClient, auth: dict[str, str], name: str) -> str:
    profile = shipped_profile("telephone").derived(name=name, offset=0.25)
    response = await client.post(
        "/api/v2/maintenance/asp/", headers=auth, files={"file": (f"{name}.json", profile.to_json())}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


async def _restore(client: httpx.AsyncClient, auth: dict[str, str], content: bytes) -> httpx.Response:
    return await client.post(
        "/api/v2/maintenance/loadbackup",
        headers=auth,
        files={"file": ("backup.json.gz", content, "application/gzip")},
    )


@pytest.mark.asyncio
async def test_backup_change_restore_round_trip(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    sessions = app.state.runtime.store.sessions
    await voiceprints.add(sessions, "a", _voiceprint(model_dir, 1), {"kind": "stream", "stream_uuid": "s-1"})
    await voiceprints.add(sessions, "b", _voiceprint(model_dir, 2), {"kind": "recordings"})
    site = await _upload_profile(client, auth, "site-a")
    active = await client.post(f"/api/v2/maintenance/asp/{site}/active", headers=auth, json={"active": True})
    assert active.status_code == 200
    before = await _state(app)

    response = await client.get("/api/v2/maintenance/backup", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert ".json.gz" in response.headers["content-disposition"]
    document = json.loads(gzip.decompress(response.content))
    assert document["format"] == "voxgate-backup" and len(document["payload_sha256"]) == 64
    assert document["counts"]["voiceprints"] == 2
    assert set(document["excluded"]) == {"users", "tokens", "events"}
    assert "$argon2" not in gzip.decompress(response.content).decode(), "no password hashes in backups"

    # change everything a restore brings back
    await voiceprints.delete(sessions, "a")
    await voiceprints.add(sessions, "c", _voiceprint(model_dir, 3), {"kind": "recordings"})
    await voiceprints.add(sessions, "b", _voiceprint(model_dir, 4), {"kind": "recordings"}, replace=True)
    await client.post(f"/api/v2/maintenance/asp/{site}/active", headers=auth, json={"active": False})
    assert (await client.delete(f"/api/v2/maintenance/asp/{site}", headers=auth)).status_code == 204
    await _upload_profile(client, auth, "site-b")
    changed = await _state(app)
    assert changed != before

    refused = await _restore(client, auth, response.content)
    assert refused.status_code == 409 and "maintenance mode" in refused.json()["detail"]
    assert await _state(app) == changed, "no restore outside maintenance mode"

    assert (await client.get("/api/v2/lock", headers=auth)).status_code == 200
    restored = await _restore(client, auth, response.content)
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["voiceprints"] == 2 and body["profiles"] == len(before["tables"]["profiles"]["rows"])
    after = await _state(app)
    assert after["voiceprints"] == before["voiceprints"], "voiceprints come back bit for bit"
    settings_after = {row[0]: row[1] for row in after["tables"]["settings"]["rows"]}
    settings_before = {row[0]: row[1] for row in before["tables"]["settings"]["rows"]}
    assert settings_after[settings_kv.ACTIVE_PROFILE] == site
    assert settings_kv.MAINTENANCE not in settings_before, "maintenance mode is server state, not data"
    assert await settings_kv.get(sessions, settings_kv.MAINTENANCE) is True, (
        "a restore keeps maintenance mode on"
    )
    assert after["tables"]["profiles"] == before["tables"]["profiles"]
    assert app.state.runtime.locked
    current = (await client.get("/api/v2/maintenance/asp/active", headers=auth)).json()
    assert current["active"]["uuid"] == site
    # and the account still works: the same token keeps answering
    assert (await client.get("/api/v2/maintenance/unlock", headers=auth)).status_code == 200


def _regzip(document: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(document).encode())


@pytest.mark.asyncio
async def test_bad_backups_are_refused_and_change_nothing(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    sessions = app.state.runtime.store.sessions
    await voiceprints.add(sessions, "a", _voiceprint(model_dir, 1), {})
    good = (await client.get("/api/v2/maintenance/backup", headers=auth)).content
    await voiceprints.add(
        sessions, "b", _voiceprint(model_dir, 2), {}
    )  # so that a restore would change things
    assert (await client.get("/api/v2/lock", headers=auth)).status_code == 200
    before = await _state(app)

    document = json.loads(gzip.decompress(good))
    vector = document["payload"]["voiceprints"][0]["embeddings"][0]["vector"]
    edited = json.loads(json.dumps(document))
    edited["payload"]["voiceprints"][0]["embeddings"][0]["vector"] = (
        vector[:10] + ("A" if vector[10] != "A" else "B") + vector[11:]
    )
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    wrong_model = json.loads(json.dumps(document))
    wrong_model["payload"]["voiceprints"][0]["embeddings"][0]["model_version"] = "other==1"
    wrong_model["payload_sha256"] = hashlib.sha256(canonical(wrong_model["payload"])).hexdigest()

    bad = {
        "truncated": (good[: len(good) // 2], 400, "truncated"),
        "truncated tail": (good[:-4], 400, "truncated"),
        "corrupted byte": (bytes(flipped), 400, "backup"),
        "edited payload": (_regzip(edited), 400, "checksum"),
        "plain truncated": (json.dumps(document).encode()[:-100], 400, "JSON"),
        "no checksum": (
            _regzip({k: v for k, v in document.items() if k != "payload_sha256"}),
            400,
            "payload_sha256",
        ),
        "a snapshot": (
            json.dumps({"format": "voxgate-voiceprint-snapshot", "format_version": 1}).encode(),
            400,
            "format",
        ),
        "empty": (b"", 400, "empty"),
        "other model": (_regzip(wrong_model), 409, "other==1"),
    }
    for name, (content, status, words) in bad.items():
        response = await _restore(client, auth, content)
        assert response.status_code == status, (name, response.text)
        assert words in response.json()["detail"], (name, response.json())
        assert await _state(app) == before, f"{name}: the store is exactly as it was"

    assert (await _restore(client, auth, good)).status_code == 200, "the intact file still restores"
    assert [e.external_id for e in await list_entries(sessions)] == ["a"]


@pytest.mark.asyncio
async def test_backup_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v2/maintenance/backup")).status_code == 401
    assert (await _restore(client, {}, b"x")).status_code == 401
