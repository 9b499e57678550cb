from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from voxgate.api.app import create_app
from voxgate.settings import Settings


def test_health_and_swagger_in_process(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://voxgate") as client:
                health = await client.get("/health")
                assert health.status_code == 200
                assert health.json()["status"] == "ok" and health.json()["store"] == "sqlite"
                swagger = await client.get("/swagger/")
                assert swagger.status_code == 200 and "swagger-ui" in swagger.text
                schema = (await client.get("/swagger/openapi.json")).json()
                assert "/health" in schema["paths"]

    asyncio.run(run())
    assert (tmp_path / "voxgate.db").exists(), "the embedded store is created at start"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_voxgate_serve_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    env = {"VOXGATE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/swagger/", timeout=5).status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0].decode()
    assert '"level": "info"' in output, "serve logs structured JSON"
