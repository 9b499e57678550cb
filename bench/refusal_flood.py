"""Refused-request flood: how fast voxgate answers requests it refuses, and how many events they cost.

A real ``voxgate serve`` on loopback (pinned to core 0); 16 clients POST ``/api/v2/verify`` for a closed
stream (404) for 20 s; then the ``error`` events are read back and their ``count`` fields summed, which must
equal the refusals (issue 13, C13: one event per refusal used to halve the throughput).

    .venv/bin/python bench/refusal_flood.py
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PASSWORD = "flood-password-123"
CLIENTS = 16
SECONDS = 20.0


async def flood() -> None:
    data = Path(tempfile.mkdtemp(prefix="voxgate-flood-"))
    env = {**os.environ, "VOXGATE_DATA_DIR": str(data), "VOXGATE_ADMIN_PASSWORD": PASSWORD}
    env["VOXGATE_LOG_LEVEL"] = "warning"
    log = (data / "server.log").open("w")
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "voxgate", "serve", "--port", "0"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while not (
            found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", (data / "server.log").read_text())
        ):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((data / "server.log").read_text())
            await asyncio.sleep(0.2)
        base = found.group(1)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            login = await client.post("/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
            headers = {"Authorization": f"Token {login.json()['key']}"}
            uuid = (await client.post("/api/v2/stream/HTTP", headers=headers)).json()["uuid"]
            await client.delete(f"/api/v2/stream/HTTP/{uuid}", headers=headers)
            sent = refused = 0
            stop = time.monotonic() + SECONDS

            async def one_client() -> None:
                nonlocal sent, refused
                async with httpx.AsyncClient(base_url=base, timeout=30) as own:
                    while time.monotonic() < stop:
                        answer = await own.post(
                            "/api/v2/verify", json={"uuid": uuid, "external_id": "x"}, headers=headers
                        )
                        sent += 1
                        refused += answer.status_code == 404

            started = time.monotonic()
            await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
            rate = sent / (time.monotonic() - started)
            await asyncio.sleep(1.5)  # the last folded event is written at the end of its second
            page = await client.get(
                "/api/v2/logging", params={"type": "error", "page_size": 1000}, headers=headers
            )
            errors = page.json()["events"]
            counted = sum(int(event["detail"].get("count", 1)) for event in errors)
        print(f"{sent} refused verifies ({refused} answered 404) at {rate:.0f}/s")
        print(f"{len(errors)} error events, whose counts add up to {counted}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    asyncio.run(flood())
