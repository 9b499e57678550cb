"""Enrollment from recordings has one copy: ``voxgate enroll`` and ``POST /api/v2/import`` make the same
voiceprint from the same files, with the same source and the same ``import`` event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from pydantic import SecretStr

from voxgate.api.app import create_app
from voxgate.cli import main
from voxgate.settings import Settings, get_settings
from voxgate.store import events, voiceprints
from voxgate.store.db import Store
from voxgate.store.voiceprints import StoredVoiceprint

PASSWORD = "correct horse battery staple"


def _recordings(speech_dir: Path) -> list[Path]:
    """Two real recordings of one LibriSpeech speaker, 8-12 s each."""
    files = sorted((speech_dir / "librispeech_test_other" / "3005").glob("*.flac"))
    chosen = [f for f in files if 8 <= sf.info(f).duration <= 14][:2]
    assert len(chosen) == 2
    return chosen


async def _stored(settings: Settings, external_id: str) -> tuple[StoredVoiceprint, list[events.Event]]:
    store = await Store(settings.resolved_database_url).open()
    try:
        stored = await voiceprints.get(store.sessions, external_id)
        page = await events.find(store.sessions, events.EventFilter(types=(events.IMPORT,)))
        return stored, list(page.events)
    finally:
        await store.close()


async def _import(settings: Settings, files: list[Path]) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://voxgate", timeout=120) as client:
            login = await client.post("/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
            auth = {"Authorization": f"Token {login.json()['key']}"}
            uploads = [("files", (p.name, p.read_bytes(), "audio/flac")) for p in files]
            imported = await client.post(
                "/api/v2/import", data={"external_id": "cust-1"}, files=uploads, headers=auth
            )
            assert imported.status_code == 201, imported.text
        engine = app.state.runtime.engine
        assert engine is not None and engine.offline.done == len(files), "imports run on the offline worker"
        assert engine.offline.thread_nice is None or engine.offline.thread_nice > 0, "at a lower priority"


def test_cli_enroll_and_api_import_make_the_same_voiceprint(
    speech_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _recordings(speech_dir)
    api_settings = Settings(
        data_dir=tmp_path / "api",
        model_dir=model_dir,
        admin_password=SecretStr(PASSWORD),
        min_enroll_speech_s=5,
    )
    asyncio.run(_import(api_settings, files))

    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("VOXGATE_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    try:
        assert main(["enroll", "--id", "cust-1", "--min-speech", "5", *map(str, files)]) == 0
        cli_settings = get_settings()
    finally:
        get_settings.cache_clear()

    by_api, api_events = asyncio.run(_stored(api_settings, "cust-1"))
    by_cli, cli_events = asyncio.run(_stored(cli_settings, "cust-1"))
    assert by_api.source == by_cli.source == {"type": "recordings", "files": [p.name for p in files]}
    assert set(by_api.voiceprint.model_ids) == set(by_cli.voiceprint.model_ids) == {"ecapa", "campplus"}
    assert by_api.voiceprint.speech_s == pytest.approx(by_cli.voiceprint.speech_s, abs=1e-6)
    for model_id in by_api.voiceprint.model_ids:
        a = by_api.voiceprint.embeddings[model_id].vector
        b = by_cli.voiceprint.embeddings[model_id].vector
        assert float(np.max(np.abs(a - b))) < 1e-6, model_id
    for recorded in (api_events, cli_events):
        assert [(e.outcome, e.external_id, e.detail["files"]) for e in recorded] == [
            ("created", "cust-1", 2)
        ]
