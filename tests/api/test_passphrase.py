"""Text-dependent readiness: a voiceprint from three short recordings of one speaker, verified from one."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from voxgate.audio.frames import float_to_pcm16

ARABIC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "arabic_commands_3s"


def clips(speaker: str) -> list[Path]:
    return sorted((ARABIC / speaker).glob("*.flac"))


def upload(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "audio/flac")) for p in paths]


async def verify_clip(client: httpx.AsyncClient, auth: dict[str, str], path: Path, external_id: str) -> dict[str, object]:
    samples, rate = sf.read(path, dtype="float32")
    pcm = float_to_pcm16(np.concatenate([samples, np.zeros(rate // 2, np.float32)])).astype("<i2").tobytes()
    opened = await client.post("/api/v2/stream/HTTP", json={"frequency": rate}, headers=auth)
    assert opened.status_code == 201, opened.text
    uuid = opened.json()["uuid"]
    sent = await client.post(f"/api/v2/stream/HTTP/data/{uuid}", content=pcm, headers=auth)
    assert sent.status_code == 200, sent.text
    response = await client.post("/api/v2/verify", json={"uuid": uuid, "external_id": external_id}, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.asyncio
async def test_passphrase_enrollment_from_three_short_recordings(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    own = clips("00000003")
    plain = await client.post("/api/v2/import", data={"external_id": "pa"}, files=upload(own[:3]), headers=auth)
    assert plain.status_code == 400 and "speech" in plain.json()["detail"], plain.text  # 20 s each, not 3 s
    too_few = await client.post(
        "/api/v2/import", data={"external_id": "pa", "passphrase": "true"}, files=upload(own[:2]), headers=auth
    )
    assert too_few.status_code == 400 and "3 to 5 recordings" in too_few.json()["detail"], too_few.text
    created = await client.post(
        "/api/v2/import", data={"external_id": "pa", "passphrase": "true"}, files=upload(own[:3]), headers=auth
    )
    assert created.status_code == 201, created.text
    assert all(r["speech_length"] >= 1.0 for r in created.json()["recordings"])
    info = await client.post("/api/v2/voiceprint", json={"external_id": "pa"}, headers=auth)
    assert info.json()["source"]["mode"] == "text-dependent", info.text

    same = [await verify_clip(client, auth, path, "pa") for path in own[3:6]]
    print("\nsame speaker from one utterance:", [(b["result"], b["score"], b["speech_length"]) for b in same])
    assert all(b["result"] in ("verified", "not_sure") for b in same), same
    assert any(b["result"] == "verified" for b in same), same
    others = [await verify_clip(client, auth, clips(s)[0], "pa") for s in ("00000004", "00000005", "00000006")]
    print("other speakers:", [(b["result"], b["score"]) for b in others])
    assert all(b["result"] != "verified" for b in others), others
