"""The contact-centre flow end to end through a real `voxgate serve` on loopback, with real speech.

Log in; stream a customer's audio over HTTP in odd-sized chunks; enroll; verify a second call of the same
customer and a call of someone else; import a voiceprint from recordings; snapshot and backup round trips;
maintenance mode; the event log and billing aggregate see it all.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

PASSWORD = "end-to-end-password"
LIBRI = "librispeech_test_other"


def _speech(speech_dir: Path, speaker: str, files: slice) -> np.ndarray:
    """A speaker's recordings (longest first) joined, at 8 kHz like a phone call."""
    paths = sorted((speech_dir / LIBRI / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration)[files]
    pieces = []
    for path in paths:
        samples, rate = sf.read(path, dtype="float32")
        pieces.append(soxr.resample(samples, rate, 8000).astype(np.float32))
    return np.concatenate(pieces)


def _pcm(samples: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _stream(client: httpx.Client, samples: np.ndarray) -> str:
    uuid = client.post("/api/v2/stream/HTTP", json={"info": {"callid": "e2e"}, "frequency": 8000}).json()[
        "uuid"
    ]
    data = _pcm(samples)

    for start in range(0, len(data), 160_001):  # several requests, odd sizes: samples split across them
        response = client.post(f"/api/v2/stream/HTTP/data/{uuid}", content=data[start : start + 160_001])
        assert response.status_code == 200, response.text
    return str(uuid)


def test_contact_centre_flow(live_server: str, speech_dir: Path) -> None:
    with httpx.Client(base_url=live_server, timeout=120) as anonymous:
        assert anonymous.post("/api/v2/stream/HTTP", json={}).status_code == 401
        login = anonymous.post("/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    headers = {"Authorization": f"Token {login.json()['key']}"}
    with httpx.Client(base_url=live_server, timeout=120, headers=headers) as client:
        _flow(client, speech_dir)


def _flow(client: httpx.Client, speech_dir: Path) -> None:
    # enrollment call: customer A
    first_call = _stream(client, _speech(speech_dir, "3080", slice(0, 3)))
    enroll = client.post("/api/v2/enroll", json={"uuid": first_call, "external_id": "customer-a"})
    assert enroll.status_code == 201, enroll.text
    assert enroll.json()["speech_length"] >= 20
    again = client.post("/api/v2/enroll", json={"uuid": first_call, "external_id": "customer-a"})
    assert again.status_code == 409

    # a later call of A, and a call of somebody else claiming to be A
    same = _stream(client, _speech(speech_dir, "3080", slice(3, 6)))
    other = _stream(client, _speech(speech_dir, "2609", slice(0, 2)))
    verdict_same = client.post("/api/v2/verify", json={"uuid": same, "external_id": "customer-a"}).json()
    verdict_other = client.post("/api/v2/verify", json={"uuid": other, "external_id": "customer-a"}).json()
    assert verdict_same["result"] == "verified", verdict_same
    assert verdict_other["result"] == "not_verified", verdict_other
    assert verdict_same["score"] > verdict_other["score"] + 5
    found = client.post("/api/v2/streams", json={"info": {"callid": "e2e"}}).json()["streams"]
    assert {s["uuid"] for s in found} >= {first_call, same, other}
    for uuid in (first_call, same, other):
        assert client.delete(f"/api/v2/stream/HTTP/{uuid}").status_code == 200

    # enrollment from recordings: customer B
    recording = io.BytesIO()
    sf.write(recording, _speech(speech_dir, "1998", slice(0, 3)), 8000, format="WAV", subtype="PCM_16")
    imported = client.post(
        "/api/v2/import", data={"external_id": "customer-b"}, files={"files": ("b.wav", recording.getvalue())}
    )
    assert imported.status_code == 201, imported.text
    assert client.post("/api/v2/voiceprint", json={"external_id": "customer-b"}).json()["exists"] is True

    # snapshot: export, remove, import back
    snapshot = client.get("/api/v2/snapshot/generate", params={"compressed": "true"})
    assert snapshot.status_code == 200
    assert client.request("DELETE", "/api/v2/leave", json={"external_id": "customer-a"}).status_code == 200
    assert client.post("/api/v2/voiceprint", json={"external_id": "customer-a"}).json()["exists"] is False
    restored = client.post(
        "/api/v2/snapshot/import", files={"file": ("s.json.gz", snapshot.content)}, data={"mode": "skip"}
    )
    assert restored.status_code == 200 and restored.json()["imported"] == 1, restored.text

    # backup, change, restore (only in maintenance mode)
    backup = client.get("/api/v2/maintenance/backup")
    assert backup.status_code == 200
    assert client.request("DELETE", "/api/v2/leave", json={"external_id": "customer-b"}).status_code == 200
    refused = client.post("/api/v2/maintenance/loadbackup", files={"file": ("b.gz", backup.content)})
    assert refused.status_code == 409
    assert client.get("/api/v2/lock").status_code == 200
    assert client.post("/api/v2/stream/HTTP", json={}).status_code == 423
    truncated = client.post("/api/v2/maintenance/loadbackup", files={"file": ("b.gz", backup.content[:-100])})
    assert truncated.status_code == 400
    loaded = client.post("/api/v2/maintenance/loadbackup", files={"file": ("b.gz", backup.content)})
    assert loaded.status_code == 200, loaded.text
    assert client.get("/api/v2/maintenance/unlock").status_code == 200
    assert client.post("/api/v2/voiceprint", json={"external_id": "customer-b"}).json()["exists"] is True

    # the verdicts still hold after the round trips
    call = _stream(client, _speech(speech_dir, "3080", slice(3, 5)))
    assert (
        client.post("/api/v2/verify", json={"uuid": call, "external_id": "customer-a"}).json()["result"]
        == "verified"
    )

    # everything above is in the event log, and billed
    events = client.get("/api/v2/logging", params={"page_size": 1000}).json()
    types = {e["type"] for e in events["events"]}
    assert {"login", "stream_start", "stream_stop", "enroll", "verify", "import", "maintenance"} <= types
    usage = client.get("/api/v2/logging_aggregate").json()
    assert usage["totals"]["enrollments"] >= 1 and usage["totals"]["verifications"] >= 3
    status = client.get("/api/v2/status").json()
    assert status["maintenance"] is False
