"""POST /api/v2/maintenance/calibrate: a profile fitted from an uploaded ZIP of real recordings, as a job with
progress and a report; the archive checked before anything is unpacked."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from voxgate.settings import Settings
from voxgate.store import profiles

DIGITS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "fsdd_digits_3s_8k"
SPEAKERS = ("george", "jackson", "lucas")
PER_SPEAKER = 4


def dataset_zip(top: str = "digits") -> bytes:
    """Three speakers with four 3 s recordings each, at 8 kHz, under one top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for speaker in SPEAKERS:
            for path in sorted((DIGITS / speaker).glob("*.flac"))[:PER_SPEAKER]:
                archive.write(path, f"{top}/{speaker}/{path.name}")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def start(client: httpx.AsyncClient, auth: dict[str, str], data: bytes, **form: str) -> httpx.Response:
    return await client.post(
        "/api/v2/maintenance/calibrate",
        data={"name": "uploaded-digits", **form},
        files={"file": ("dataset.zip", data, "application/zip")},
        headers=auth,
    )


async def finished(client: httpx.AsyncClient, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    """Every state seen while polling until the job is done or failed."""
    seen = []
    for _ in range(600):
        job = (await client.get(f"/api/v2/maintenance/calibrate/{job_id}", headers=auth)).json()
        seen.append(job)
        if job["stage"] in ("done", "failed"):
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"the job did not finish: {seen[-1]}")


@pytest.mark.asyncio
async def test_fit_store_and_report(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    started = await start(client, auth, dataset_zip(), model="campplus")
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["name"] == "uploaded-digits" and job["stage"] in ("unpacking", "embedding")
    seen = await finished(client, auth, job["id"])
    done = seen[-1]
    assert done["stage"] == "done", done
    assert done["total"] == done["done"] == len(SPEAKERS) * PER_SPEAKER
    assert not list(settings.data_dir.glob("calibrate-*"))  # the unpacked upload is gone
    counts = [s["done"] for s in seen if s["stage"] == "embedding"]
    assert counts == sorted(counts)  # progress only grows
    report = done["report"]
    n = len(SPEAKERS) * PER_SPEAKER
    assert report["target_trials"] == len(SPEAKERS) * PER_SPEAKER * (PER_SPEAKER - 1) // 2
    assert report["target_trials"] + report["nontarget_trials"] == n * (n - 1) // 2
    assert sum(report["target_counts"]) == report["target_trials"]
    assert sum(report["nontarget_counts"]) == report["nontarget_trials"]
    assert len(report["histogram_edges"]) == len(report["target_counts"]) + 1
    assert 0 <= report["eer"] < 0.5 and all(math.isfinite(report[k]) for k in ("cllr", "min_cllr", "min_dcf"))
    det = report["det"]
    assert det[0] == [1.0, 0.0] and det[-1] == [0.0, 1.0]
    assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(det))
    # stored, not active, with the console's report
    listed = (await client.get("/api/v2/maintenance/asp/", headers=auth)).json()
    (stored,) = [p for p in listed if p["uuid"] == done["profile_uuid"]]
    assert stored["name"] == "uploaded-digits" and not stored["active"] and stored["model"] == "campplus"
    assert stored["channel"] == "telephone"  # 8 kHz recordings
    full = (await client.get(f"/api/v2/maintenance/asp/{stored['uuid']}", headers=auth)).json()
    assert full["document"]["fitted_on"]["sets"][0]["speakers"] == len(SPEAKERS)
    assert full["report"] == report  # kept beside the profile, past the job
    # deleting the profile deletes its report
    assert (await client.delete(f"/api/v2/maintenance/asp/{stored['uuid']}", headers=auth)).status_code == 204
    assert await profiles.get_report(app.state.runtime.store.sessions, stored["uuid"]) is None


@pytest.mark.asyncio
async def test_refused_archives(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    refused = {
        b"not a zip at all": "not a ZIP",
        zip_of({"../evil/a.wav": b"x", "s/b.wav": b"y"}): "outside itself",
        zip_of({"/abs/a.wav": b"x"}): "outside itself",
        zip_of({}): "empty",
    }
    for data, words in refused.items():
        answer = await start(client, auth, data)
        assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    bad_name = await start(client, auth, dataset_zip(), name="../x")
    assert bad_name.status_code == 422
    assert (await client.get("/api/v2/maintenance/calibrate/nope", headers=auth)).status_code == 404
    assert (await client.get("/api/v2/maintenance/calibrate/nope")).status_code == 401


@pytest.mark.asyncio
async def test_a_dataset_that_cannot_be_fitted_fails_with_a_reason(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    one_speaker = zip_of({"only/a.flac": (DIGITS / "george" / "george_seg000.flac").read_bytes()})
    started = await start(client, auth, one_speaker)
    assert started.status_code == 202
    failed = (await finished(client, auth, started.json()["id"]))[-1]
    assert failed["stage"] == "failed" and "at least two speakers" in failed["detail"]
    assert failed["profile_uuid"] is None
