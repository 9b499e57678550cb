"""A server takes back its own snapshot whatever models it runs (regression: with VOXGATE_MODELS=campplus the
import of a fresh snapshot answered 409 "no ecapa embedding", because two places decided the models)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from voxgate.api.app import create_app
from voxgate.settings import Settings
from voxgate.store import voiceprints

PASSWORD = "correct horse battery staple"
SUBSETS = [  # VOXGATE_MODELS, VOXGATE_PROFILE, the models a voiceprint then holds
    (None, "auto", ("ecapa", "campplus")),
    ("ecapa", "wideband-ecapa", ("ecapa",)),
    ("campplus", "telephone-campplus", ("campplus",)),
    ("campplus,ecapa", "auto", ("campplus", "ecapa")),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("models", "profile", "held"), SUBSETS)
async def test_snapshot_round_trip_under_every_model_subset(
    models: str | None,
    profile: str,
    held: tuple[str, ...],
    speech_dir: Path,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    recording = sorted((speech_dir / "librispeech_test_other" / "3005").glob("*.flac"))[0]
    settings = Settings(
        data_dir=tmp_path,
        model_dir=model_dir,
        admin_password=SecretStr(PASSWORD),
        models=models,
        profile=profile,
        min_enroll_speech_s=3,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://voxgate", timeout=120) as client:
            login = await client.post("/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
            auth = {"Authorization": f"Token {login.json()['key']}"}
            files = [("files", (recording.name, recording.read_bytes(), "audio/flac"))]
            imported = await client.post("/api/v2/import", data={"external_id": "alice"}, files=files, headers=auth)
            assert imported.status_code == 201, imported.text
            stored = await voiceprints.get(app.state.runtime.store.sessions, "alice")
            assert set(stored.voiceprint.model_ids) == set(held)

            snapshot = await client.get("/api/v2/snapshot/generate", headers=auth)
            assert snapshot.status_code == 200
            back = await client.post(
                "/api/v2/snapshot/import",
                headers=auth,
                params={"mode": "overwrite"},
                files={"file": ("snapshot.json", snapshot.content, "application/json")},
            )
            assert back.status_code == 200, back.text
            assert back.json() == {"imported": 0, "overwritten": 1, "skipped": 0}
