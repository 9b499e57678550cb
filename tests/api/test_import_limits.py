"""One enrollment from recordings costs at most VOXGATE_MAX_AUDIO_DURATION_S of audio in all (regression:
32 small FLAC files of hours of silence fitted one request, each within the per-file limit)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import soundfile as sf
from fastapi import FastAPI

from voxgate.settings import Settings

LIMIT_S = 25.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_audio_duration_s": LIMIT_S, "min_enroll_speech_s": 3.0})


@pytest.mark.asyncio
async def test_the_duration_limit_holds_for_all_the_recordings_together(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], speech_dir: Path
) -> None:
    files = sorted((speech_dir / "librispeech_test_other" / "3080").glob("*.flac"))
    chosen = [f for f in files if 0.5 * LIMIT_S < sf.info(f).duration < LIMIT_S][:2]
    assert len(chosen) == 2, "two recordings each within the limit, over it together"
    one = [("files", (chosen[0].name, chosen[0].read_bytes(), "audio/flac"))]
    alone = await client.post("/api/v2/import", data={"external_id": "a"}, files=one, headers=auth)
    assert alone.status_code == 201, alone.text
    both = [("files", (f.name, f.read_bytes(), "audio/flac")) for f in chosen]
    refused = await client.post("/api/v2/import", data={"external_id": "b"}, files=both, headers=auth)
    assert refused.status_code == 413, refused.text
    assert f"may last {LIMIT_S:g} s in all" in refused.json()["detail"]
    info = await client.post("/api/v2/voiceprint", json={"external_id": "b"}, headers=auth)
    assert info.json()["exists"] is False, "nothing half-written"
