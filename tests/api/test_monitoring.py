"""Metrics through the real app in process: what a stream, an enrollment and a verification count, the
HTTP request metrics by route template, and GET /metrics on the metrics app (never on the API's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.api.conftest import ADMIN_PASSWORD
from tests.api.test_streams import open_stream, pcm_8k
from voxgate.api.app import create_metrics_app
from voxgate.api.monitoring import UNMATCHED, RequestMetrics
from voxgate.service import metrics
from voxgate.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        admin_password=SecretStr(ADMIN_PASSWORD),
        log_json=False,
        min_enroll_speech_s=3.0,
    )


@pytest_asyncio.fixture
async def scraper(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_metrics_app(app), client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics", timeout=30) as c:
        yield c


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def scrape(scraper: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await scraper.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@pytest.mark.asyncio
async def test_a_stream_enrolled_and_verified_is_counted(
    client: httpx.AsyncClient, auth: dict[str, str], scraper: httpx.AsyncClient
) -> None:
    speech = value("voxgate_speech_analysed_seconds_total", source="stream")
    cycles = value("voxgate_engine_cycle_seconds_count")
    vad = value("voxgate_inference_seconds_total", model="vad")
    created = value("voxgate_enrollments_total", source="stream", result="created")
    verified = value("voxgate_verifications_total", result="verified")
    missing = value("voxgate_verifications_total", result="voiceprint_not_found")
    latency = value("voxgate_verify_latency_seconds_count")
    data_route = {"method": "POST", "route": "/api/v2/stream/HTTP/data/{uuid}", "status": "200"}
    uploads = value("voxgate_http_requests_total", **data_route)

    stream = await open_stream(client, auth, frequency=8000)
    got = await scrape(scraper)
    assert got[("voxgate_streams", (("state", "collecting"), ("type", "HTTP")))] == 1

    response = await client.post(
        f"/api/v2/stream/HTTP/data/{stream}", content=pcm_8k("1998", slice(1, 2)), headers=auth
    )
    assert response.status_code == 200, response.text
    heard = response.json()["speech_length"]
    assert heard >= 3.0
    response = await client.post("/api/v2/enroll", json={"uuid": stream, "external_id": "m-1"}, headers=auth)
    assert response.status_code == 201, response.text
    response = await client.post("/api/v2/verify", json={"uuid": stream, "external_id": "m-1"}, headers=auth)
    assert response.json()["result"] == "verified", response.text
    analysed = response.json()["speech_length"]  # the chunks, and the settled tail enroll embedded
    assert analysed >= heard
    response = await client.post(
        "/api/v2/verify", json={"uuid": stream, "external_id": "nobody"}, headers=auth
    )
    assert response.status_code == 404

    assert value("voxgate_speech_analysed_seconds_total", source="stream") == pytest.approx(
        speech + analysed, abs=0.01
    )
    assert value("voxgate_engine_cycle_seconds_count") > cycles
    assert value("voxgate_inference_seconds_total", model="vad") > vad
    assert value("voxgate_enrollments_total", source="stream", result="created") == created + 1
    assert value("voxgate_verifications_total", result="verified") == verified + 1
    assert value("voxgate_verifications_total", result="voiceprint_not_found") == missing + 1
    assert value("voxgate_verify_latency_seconds_count") == latency + 2, "answers and errors alike"
    assert value("voxgate_http_requests_total", **data_route) == uploads + 1

    got = await scrape(scraper)
    assert got[("voxgate_streams", (("state", "ready"), ("type", "HTTP")))] == 1
    assert got[("voxgate_engine_running", ())] == 1
    speaker_models = [
        labels[0][1]
        for name, labels in got
        if name == "voxgate_inference_seconds_total" and labels[0][1] != "vad"
    ]
    assert speaker_models, "each speaker model's time is counted"
    text = (await scraper.get("/metrics")).text
    assert stream not in text, "routes are templates, never raw paths"

    await client.delete(f"/api/v2/stream/HTTP/{stream}", headers=auth)
    got = await scrape(scraper)
    assert sum(v for (n, _), v in got.items() if n == "voxgate_streams") == 0


@pytest.mark.asyncio
async def test_metrics_are_not_on_the_api_port(client: httpx.AsyncClient, scraper: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 404
    assert (await scraper.get("/health")).status_code == 404, "the metrics app serves /metrics only"
    assert (await scraper.get("/swagger/openapi.json")).status_code == 404


@pytest.mark.asyncio
async def test_requests_are_counted_by_route_template_and_status() -> None:
    inner = FastAPI()

    @inner.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        if thing_id == 500:
            raise RuntimeError("boom")
        return {"id": thing_id}

    app = RequestMetrics(inner)

    def count(method: str, route: str, status: str) -> float:
        return value("voxgate_http_requests_total", method=method, route=route, status=status)

    before = {
        "ok": count("GET", "/things/{thing_id}", "200"),
        "bad": count("GET", "/things/{thing_id}", "422"),
        "method": count("POST", "/things/{thing_id}", "405"),
        "error": count("GET", "/things/{thing_id}", "500"),
        "none": count("GET", UNMATCHED, "404"),
        "other": count("other", UNMATCHED, "404"),
    }
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/things/1")).status_code == 200
        assert (await c.get("/things/2")).status_code == 200
        assert (await c.get("/things/x")).status_code == 422
        assert (await c.post("/things/1")).status_code == 405
        assert (await c.get("/things/500")).status_code == 500
        assert (await c.get("/elsewhere/abc")).status_code == 404
        assert (await c.request("BREW", "/pot")).status_code == 404
    assert count("GET", "/things/{thing_id}", "200") == before["ok"] + 2
    assert count("GET", "/things/{thing_id}", "422") == before["bad"] + 1
    assert count("POST", "/things/{thing_id}", "405") == before["method"] + 1
    assert count("GET", "/things/{thing_id}", "500") == before["error"] + 1
    assert count("GET", UNMATCHED, "404") == before["none"] + 1
    assert count("other", UNMATCHED, "404") == before["other"] + 1


@pytest.mark.asyncio
async def test_a_body_refused_before_routing_is_counted_under_its_route(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    labels = {"method": "POST", "route": "/rest-auth/login/", "status": "413"}
    before = value("voxgate_http_requests_total", **labels)
    response = await client.post(
        "/rest-auth/login/", content=b"x" * (2 << 20), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert value("voxgate_http_requests_total", **labels) == before + 1
