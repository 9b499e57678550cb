"""``voxgate serve`` as an operator runs it: port 0 reports the port the system chose, and with a
certificate the same port speaks HTTPS and WSS (certificate made here, self-signed, at test time)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

PASSWORD = "correct horse battery staple"
LISTENING = re.compile(r"voxgate: listening on (https?)://127\.0\.0\.1:(\d+)")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voxgate test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def serve(folder: Path, model_dir: Path, *extra: str) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """`voxgate serve --port 0 ...`; yields the scheme and port it printed and the process, stops it after."""
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(folder / "data"),
        "VOXGATE_MODEL_DIR": str(model_dir),
        "VOXGATE_ADMIN_PASSWORD": PASSWORD,
        "VOXGATE_LOG_JSON": "false",
        "VOXGATE_LOG_LEVEL": "warning",
    }
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voxgate", "serve", "--port", "0", *extra], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 90
        while not (found := LISTENING.search(log_path.read_text())):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield found.group(1), int(found.group(2)), process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_port_0_reports_the_port_it_got(tmp_path: Path, model_dir: Path) -> None:
    for scheme, port, _ in serve(tmp_path, model_dir):
        assert scheme == "http" and port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"


def test_https_and_wss_on_the_same_port(tmp_path: Path, model_dir: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    for scheme, port, _ in serve(tmp_path, model_dir, "--certfile", str(cert), "--keyfile", str(key)):
        assert scheme == "https"
        base = f"https://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", verify=trust, timeout=10).json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
            httpx.get(f"{base}/health", timeout=10)
        with pytest.raises(httpx.RemoteProtocolError):  # and no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        login = httpx.post(
            f"{base}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}, verify=trust
        )
        token = login.json()["key"]
        with connect(f"wss://127.0.0.1:{port}/ws/{token}", ssl=trust, open_timeout=20) as ws:
            ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            assert json.loads(ws.recv(timeout=20))["status"] == 200


def test_stopping_ends_the_live_feeds(tmp_path: Path, model_dir: Path) -> None:
    """A server waits for open responses before it stops: a watcher of GET /api/v2/streams/live (up to a
    minute by design) is ended at once, and SIGTERM stops the server in seconds, not at the watch's end."""
    for _, port, process in serve(tmp_path, model_dir):
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(
            f"{base}/rest-auth/login/", json={"username": "admin", "password": PASSWORD}
        ).json()
        headers = {"Authorization": f"Token {token['key']}"}
        with httpx.stream(
            "GET", f"{base}/api/v2/streams/live?interval_s=10&duration_s=60", headers=headers, timeout=90
        ) as watch:
            lines = watch.iter_lines()
            assert next(lines) == "event: streams"  # the watch is open
            started = time.monotonic()
            process.terminate()
            rest = list(lines)  # ends when the server ends the response
            assert time.monotonic() - started < 15, rest
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 20


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "voxgate", "serve", "--certfile", str(cert)],
        env={**os.environ, "VOXGATE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "both --certfile and --keyfile" in done.stderr
