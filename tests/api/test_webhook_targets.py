"""Webhook SSRF (issue 13 C5): callbacks go to public addresses only, unless the operator allows a network.

Refused at subscribe time: userinfo, numeric hosts that are not dotted quads, literal addresses that are not
public. Checked at every delivery: every address a host name resolves to, and the request goes to the checked
address (Host header and SNI carry the name), so a DNS answer that changes cannot slip through. A denied
delivery is final and its event says "target not allowed", nothing more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from voxgate.service.webhooks import (
    NOT_ALLOWED,
    Delivery,
    IpAddress,
    TargetNotAllowed,
    WebhookSender,
    address_allowed,
    check_target,
    target_of,
)
from voxgate.settings import Settings, parse_networks
from voxgate.store import events
from voxgate.store.db import Store
from voxgate.store.subscriptions import Subscription

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")


# -- the policy ------------------------------------------------------------------------------------------

DENIED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.1.2.3", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.254", "192.0.0.8", "192.0.2.1",
    "198.18.0.1", "198.51.100.7", "203.0.113.7", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "::127.0.0.1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::1", "fe80::1", "fc00::1", "fd12:3456::1",
    "fec0::1", "ff02::1", "2001:db8::1", "2002:7f00:1::1", "2001::1", "100::1",
]  # fmt: skip
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


def test_denied_and_allowed_addresses() -> None:
    for text in DENIED:
        assert not address_allowed(ipaddress.ip_address(text)), text
    for text in ALLOWED:
        assert address_allowed(ipaddress.ip_address(text)), text
    allow = parse_networks("10.20.0.0/16, 127.0.0.0/8")
    assert address_allowed(ipaddress.ip_address("10.20.3.4"), allow)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allow), "judged by its IPv4 address"
    assert not address_allowed(ipaddress.ip_address("10.21.0.1"), allow)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)


def test_the_allow_list_setting_is_checked_at_start() -> None:
    assert Settings().webhook_allowed_networks == ()
    settings = Settings(webhook_allow_networks=" 10.20.0.0/16, fd00:1::/64,127.0.0.1 ")
    assert settings.webhook_allow_networks == "10.20.0.0/16,fd00:1::/64,127.0.0.1/32"
    assert [str(n) for n in settings.webhook_allowed_networks] == [
        "10.20.0.0/16",
        "fd00:1::/64",
        "127.0.0.1/32",
    ]
    for bad in ("10.20.0.1/16", "10.0.0.0/33", "intranet", "10.0.0.0/8;rm"):
        with pytest.raises(ValueError, match="CIDR"):
            Settings(webhook_allow_networks=bad)
    with pytest.raises(ValueError, match="at most 64"):
        Settings(webhook_allow_networks=",".join(f"10.0.{i}.0/24" for i in range(65)))


BAD_FORMS = {
    "http://user:pass@crm.example.com/h": "user name or password",
    "http://user@crm.example.com/h": "user name or password",
    "https://:pw@crm.example.com/h": "user name or password",
    "http://crm.example.com\\@127.0.0.1/h": "backslash",
    "http://a@b@crm.example.com/h": "user name or password",
    "http://2130706433/h": "not a dotted quad",
    "http://0x7f000001/h": "not a dotted quad",
    "http://0x7f.1/h": "not a dotted quad",
    "http://017700000001/h": "not a dotted quad",
    "http://0177.0.0.1/h": "not a dotted quad",
    "http://127.1/h": "not a dotted quad",
    "http://127.0.1/h": "not a dotted quad",
    "http://0/h": "not a dotted quad",
    "http://127.0.0.1./h": "not a dotted quad",
    "http://1.2.3.4.5/h": "not a dotted quad",
    "http://crm.example.com.0x10/h": "not a dotted quad",
    "http://[fe80::1%25eth0]/h": "not a valid IPv6",
    "http://127.0.0.1/h": "127.0.0.1 is not a public address",
    "http://127.0.0.1:8080/h": "127.0.0.1 is not a public address",
    "https://10.0.0.5/h": "not a public address",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is not a public address",
    "http://0.0.0.0:8000/h": "0.0.0.0 is not a public address",
    "http://100.64.1.1/h": "not a public address",
    "http://224.0.0.1/h": "not a public address",
    "http://[::1]:8080/h": "::1 is not a public address",
    "http://[::]/h": "not a public address",
    "http://[::ffff:127.0.0.1]/h": "not a public address",
    "http://[::ffff:7f00:1]/h": "not a public address",
    "http://[fe80::1]/h": "not a public address",
    "http://[fd00::1]/h": "not a public address",
    "http://[64:ff9b::a9fe:a9fe]/h": "not a public address",
}


def test_bad_forms_are_refused() -> None:
    for url, words in BAD_FORMS.items():
        with pytest.raises(TargetNotAllowed, match=words):
            check_target(url)
    for url in ("https://crm.example.com/h", "http://203.0.114.7:8080/h", "https://[2606:4700::1111]/h",
                "https://bücher.example/h", "http://crm-1.example.com./h", "http://8.8.8.8/h"):  # fmt: skip
        check_target(url)
    assert target_of("https://Bücher.Example:8443/h").host == "xn--bcher-kva.example"
    assert check_target("http://127.0.0.1:9/h", LOOPBACK).address == ipaddress.ip_address("127.0.0.1")
    assert check_target("http://[::1]:9/h", LOOPBACK).port == 9


@pytest.mark.asyncio
async def test_subscribe_refuses_each_bad_form(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    base = {"channel_uuid": "crm-line-7", "type": "streams", "info": {}}
    for url, words in BAD_FORMS.items():
        response = await client.post("/api/v2/subscription", json={**base, "webhook": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        assert words in response.json()["detail"], (url, response.text)
    listed = (await client.get("/api/v2/subscription", headers=auth)).json()["subscriptions"]
    assert listed == []
    fine = await client.post(
        "/api/v2/subscription", json={**base, "webhook": "https://crm.example.com/h"}, headers=auth
    )
    assert fine.status_code == 201, fine.text
    # a host name is not resolved here (its addresses may change): localhost is refused at delivery
    later = await client.post(
        "/api/v2/subscription", json={**base, "webhook": "http://localhost:9/h"}, headers=auth
    )
    assert later.status_code == 201, later.text


# -- delivery ------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    base: str = ""
    port: int = 0
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [headers for p, headers in self.calls if p == path]


def _serve(context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: connections stay in the sender's pool

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:

        def remember(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            state.sni.append(name)

        context.sni_callback = remember
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.port = int(server.server_address[1])
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


class Resolver:
    """Host names of ``.example.test`` resolve to what a test says; every question is remembered."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[IpAddress]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


def _hook(url: str, name: str = "sub-1") -> Subscription:
    return Subscription(name, "streams", "line", None, url, "k" * 64)


async def _webhook_events(store: Store, want: int, timeout_s: float = 10.0) -> list[events.Event]:
    deadline = time.monotonic() + timeout_s
    while True:
        page = await events.find(store.sessions, events.EventFilter(types=(events.WEBHOOK,)))
        if len(page.events) >= want or time.monotonic() > deadline:
            return page.events
        await asyncio.sleep(0.05)


async def _delivered(sender: WebhookSender, name: str, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while sender.busy(name) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stats = sender.stats(name)
    assert stats is not None
    return stats.delivered


@pytest.mark.asyncio
async def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    """``localhost`` (from /etc/hosts, the real resolver): denied without the allow-list, final at once,
    and the event says only "target not allowed"; delivered with the allow-list."""
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    url = f"http://localhost:{receiver.port}/ok/local"
    denying = WebhookSender(store.sessions, timeout_s=2, retries=3, backoff_s=0.05)
    allowing = WebhookSender(store.sessions, timeout_s=2, retries=3, backoff_s=0.05, allow=LOOPBACK)
    try:
        denying.start()
        assert denying.submit(Delivery.of(_hook(url), {"n": 1}, "s-1"))
        (event,) = await _webhook_events(store, 1)
        await asyncio.sleep(0.3)  # a retry would have come by now (backoff 0.05 s)
        assert receiver.calls == []
        assert event.outcome == events.FAILED
        assert event.detail["error"] == NOT_ALLOWED == "target not allowed"
        assert event.detail["attempts"] == 1 and event.detail["status"] is None
        shown = json.dumps(event.detail)
        assert "127.0.0.1" not in shown and "refused" not in shown.lower(), "nothing about the target"
        stats = denying.stats("sub-1")
        assert stats is not None and (stats.failed, stats.retries, stats.delivered) == (1, 0, 0)
        assert stats.last_error == NOT_ALLOWED

        allowing.start()
        assert allowing.submit(Delivery.of(_hook(url, "sub-2"), {"n": 2}, "s-1"))
        assert await _delivered(allowing, "sub-2") == 1
        (headers,) = receiver.on("/ok/local")
        assert headers["host"] == f"localhost:{receiver.port}", "the name travels in the Host header"
        assert len(await _webhook_events(store, 2, timeout_s=0.2)) == 1, "no event for a success"
    finally:
        await denying.stop()
        await allowing.stop()
        await store.close()


@pytest.mark.asyncio
async def test_every_resolved_address_is_checked_and_the_checked_one_is_used(
    tmp_path: Path, receiver: Receiver
) -> None:
    """DNS rebinding: a name that resolves to a public and a private address is refused; a name the
    client itself could not resolve at all is delivered to the address voxgate checked (pinned)."""
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    resolver = Resolver(
        {
            "rebind.example.test": ["8.8.8.8", "192.168.0.10"],  # one private address refuses the name
            "metadata.example.test": ["169.254.169.254"],
            "mapped.example.test": ["::ffff:10.0.0.1"],
            "crm.example.test": ["127.0.0.1"],
        }
    )
    sender = WebhookSender(
        store.sessions, timeout_s=2, retries=2, backoff_s=0.05, allow=LOOPBACK[:1], resolver=resolver
    )
    port = receiver.port
    try:
        sender.start()
        for i, host in enumerate(("rebind", "metadata", "mapped")):
            url = f"http://{host}.example.test:{port}/h"
            sender.submit(Delivery.of(_hook(url, f"denied-{i}"), {"n": i}, "s-1"))
        found = await _webhook_events(store, 3)
        assert sorted(e.detail["error"] for e in found) == [NOT_ALLOWED] * 3
        assert all(e.detail["attempts"] == 1 for e in found)
        assert resolver.asked.count("rebind.example.test") == 1, "asked once: no retries"

        sender.submit(Delivery.of(_hook(f"http://crm.example.test:{port}/pinned", "pinned"), {}, "s-1"))
        assert await _delivered(sender, "pinned") == 1
        (headers,) = receiver.on("/pinned")
        assert headers["host"] == f"crm.example.test:{port}"
    finally:
        await sender.stop()
        await store.close()


def _certificates(tmp_path: Path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA and a server certificate for ``names``: (server context, client context trusting the CA)."""
    pytest.importorskip("cryptography")  # not a dependency of voxgate; present in the dev environment
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voxgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


@pytest.mark.asyncio
async def test_https_goes_to_the_checked_address_and_checks_the_name(tmp_path: Path) -> None:
    """The TLS certificate is checked against the URL's name (sent as SNI) while the connection goes to the
    address voxgate checked; a name the certificate does not cover fails, even right after a callback to
    the same address for the covered name (a keep-alive receiver: no connection is reused across names)."""
    server_context, client_context = _certificates(tmp_path, ["crm.example.test"])
    served = _serve(server_context)
    receiver = next(served)
    store = await Store(f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}").open()
    resolver = Resolver({"crm.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    sender = WebhookSender(
        store.sessions, timeout_s=5, retries=0, allow=LOOPBACK, resolver=resolver, verify=client_context
    )
    try:
        sender.start()
        good = f"https://crm.example.test:{receiver.port}/tls"
        sender.submit(Delivery.of(_hook(good, "good"), {}, "s-1"))
        assert await _delivered(sender, "good") == 1
        assert receiver.on("/tls")[0]["host"] == f"crm.example.test:{receiver.port}"
        assert receiver.sni == ["crm.example.test"]

        wrong = f"https://other.example.test:{receiver.port}/wrong"
        sender.submit(Delivery.of(_hook(wrong, "wrong"), {}, "s-1"))
        assert await _delivered(sender, "wrong") == 0
        (event,) = await _webhook_events(store, 1)
        assert "certificate" in event.detail["error"].lower(), event.detail
        assert receiver.on("/wrong") == [], "never sent over the connection made for the other name"
    finally:
        await sender.stop()
        await store.close()
        next(served, None)


@pytest.mark.asyncio
async def test_the_app_denies_a_loopback_name_without_the_allow_list(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    """End to end, default settings: a `streams` subscription to localhost is stored, its callback is
    refused at delivery, once, and the event log says "target not allowed"."""
    hook = f"http://localhost:{receiver.port}/ok/app"
    body = {"channel_uuid": "line-5", "webhook": hook, "type": "streams", "info": {}}
    assert (await client.post("/api/v2/subscription", json=body, headers=auth)).status_code == 201
    opened = await client.post("/api/v2/stream/HTTP", json={"info": {"source_uuid": "line-5"}}, headers=auth)
    assert opened.status_code == 201, opened.text
    deadline = time.monotonic() + 10
    while True:
        logged = await client.get("/api/v2/logging", params={"type": "webhook"}, headers=auth)
        found = logged.json()["events"]
        if found or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [(e["outcome"], e["detail"]["error"], e["detail"]["attempts"]) for e in found] == [
        ("failed", NOT_ALLOWED, 1)
    ]
    assert receiver.calls == []
    listed = (await client.get("/api/v2/subscription", headers=auth)).json()["subscriptions"]
    assert listed[0]["deliveries"]["last_error"] == NOT_ALLOWED
    assert listed[0]["deliveries"]["retries"] == 0
    await client.delete(f"/api/v2/stream/HTTP/{opened.json()['uuid']}", headers=auth)
