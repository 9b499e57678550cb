"""The SIP agent's answers to everything that is not a good call: malformed messages, unknown methods,
users and dialogs, offers without a common codec, no capacity, CANCEL; and calls that voxgate ends
(stop, RTP timeout) through the record-routing proxy."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.telephony import peers
from tests.telephony.conftest import FakeRegistry, pbx_config, run_sipp, wait_registered
from voxgate.telephony.agent import AgentOptions, SipAgent
from voxgate.telephony.sip.message import SipMessage, parse_message

HANGUP_XML = Path(__file__).with_name("hangup.xml")
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP {pts}\r\n"
)


class Phone:
    """A raw UDP socket that talks SIP to the agent directly (no proxy in between)."""

    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def request(
        self, method: str, user: str = "voxgate", *, body: str = "", extra: str = "", branch: str = ""
    ) -> str:
        self.n += 1
        branch = branch or f"z9hG4bKphone{self.n}"
        content_type = "Content-Type: application/sdp\r\n" if body else ""
        return (
            f"{method} sip:{user}@127.0.0.1:{self.agent.local_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            f"From: <sip:phone@127.0.0.1:{self.port}>;tag=ph{self.n}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: phone-{self.n}@test\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:phone@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n{extra}{content_type}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )

    def send(self, data: str | bytes) -> None:
        self.sock.sendto(
            data.encode() if isinstance(data, str) else data, ("127.0.0.1", self.agent.local_port)
        )

    async def receive_raw(self, timeout_s: float = 2.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout_s)
        except TimeoutError:
            return None

    async def receive(self, timeout_s: float = 2.0) -> SipMessage | None:
        data = await self.receive_raw(timeout_s)
        return None if data is None else parse_message(data)

    async def final(self, timeout_s: float = 3.0) -> SipMessage:
        while True:
            message = await self.receive(timeout_s)
            assert message is not None, "no final response"
            if message.status is not None and message.status >= 200:
                return message


@pytest_asyncio.fixture
async def phone(agent: SipAgent) -> AsyncIterator[Phone]:
    p = Phone(agent)
    yield p
    p.sock.close()


@pytest.mark.asyncio
async def test_malformed_and_unknown_requests_get_the_right_answer(
    agent: SipAgent, phone: Phone, registry: FakeRegistry
) -> None:
    phone.send(b"\x00\xff garbage \r\n\r\n")
    phone.send(b"\r\n\r\n")  # keep-alive
    phone.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKnothing\r\n\r\n")
    assert await phone.receive(0.3) is None
    phone.send(
        f"INVITE sip:voxgate@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKbad\r\n\r\n"
    )
    bad = await phone.receive_raw()  # no Call-ID, CSeq, From, To: a 400 with what there is
    assert bad is not None and bad.startswith(b"SIP/2.0 400 Bad Request"), bad
    # every header there, but the Via (or the request URI) unusable: a 400 to where it came from
    for broken in (
        phone.request("OPTIONS").replace("Via: SIP/2.0/UDP", "Via: nonsense"),
        phone.request("INVITE", body=OFFER.format(pts="0")).replace(
            "INVITE sip:voxgate@", "INVITE http:voxgate@"
        ),
        re.sub(r";tag=ph\d+", "", phone.request("INVITE", body=OFFER.format(pts="0"))),  # no From tag
    ):
        phone.send(broken)
        answer = await phone.receive_raw()
        assert answer is not None and answer.startswith(b"SIP/2.0 400"), (broken, answer)
    # an RFC 2543 peer without a magic-cookie branch: two requests are two transactions
    for cseq in (1, 2):
        legacy = phone.request("OPTIONS").replace(f"branch=z9hG4bKphone{phone.n}", "branch=old")
        phone.send(
            legacy.replace("CSeq: 1 OPTIONS", f"CSeq: {cseq} OPTIONS").replace(f"phone-{phone.n}@", "same@")
        )
        assert (await phone.final()).cseq() == (cseq, "OPTIONS")
    answers = {}
    for method, user, body in [
        ("FOO", "voxgate", ""),
        ("MESSAGE", "voxgate", ""),
        ("OPTIONS", "voxgate", ""),
        ("BYE", "voxgate", ""),
        ("CANCEL", "voxgate", ""),
        ("INVITE", "nobody", OFFER.format(pts="0")),
        ("INVITE", "voxgate", ""),
        ("INVITE", "voxgate", OFFER.format(pts="9 18") + "a=rtpmap:9 G722/8000\r\n"),
        ("INVITE", "voxgate", "v=0\r\nm=audio 4000 RTP/AVP 0\r\n"),
    ]:
        phone.send(phone.request(method, user, body=body))
        response = await phone.final()
        answers[(method, user, body[:20])] = response.status
        if method == "OPTIONS":
            assert "INVITE" in (response.headers.get("Allow") or "")
        if method == "INVITE":
            phone.send(
                phone.request("ACK", user).replace(
                    f"branch=z9hG4bKphone{phone.n}", f"branch=z9hG4bKphone{phone.n - 1}"
                )
            )
    assert list(answers.values()) == [501, 405, 200, 481, 481, 404, 488, 488, 488]
    assert not registry.streams and agent.malformed >= 2
    assert agent.registration.state == "registered"


@pytest.mark.asyncio
async def test_no_capacity_is_busy_here(agent: SipAgent, phone: Phone, registry: FakeRegistry) -> None:
    registry.max_streams = 0
    phone.send(phone.request("INVITE", body=OFFER.format(pts="0")))
    assert (await phone.final()).status == 486
    assert not agent.ports.in_use and not agent.dialogs


@pytest.mark.asyncio
async def test_each_call_s_final_answer_is_heard(proxy: peers.Kamailio, registry: FakeRegistry) -> None:
    """``on_call`` (the server's ``voxgate_sip_calls_total``) hears every call once, with its final status."""
    heard: list[tuple[str, int]] = []
    agent = SipAgent(
        pbx_config(proxy), registry, AgentOptions(on_call=lambda pbx, status: heard.append((pbx, status)))
    )
    await agent.start()
    phone = Phone(agent)
    try:
        await wait_registered(agent)
        registry.max_streams = 0
        phone.send(phone.request("INVITE", body=OFFER.format(pts="0")))
        assert (await phone.final()).status == 486
        phone.send(phone.request("INVITE", body=OFFER.format(pts="18")))
        assert (await phone.final()).status == 488
        registry.max_streams = 10
        invite = phone.request("INVITE", body=OFFER.format(pts="0"))
        phone.send(invite)
        assert (await phone.final()).status == 200
        phone.send(invite)  # a retransmission is the same call
        assert (await phone.final()).status == 200
        assert heard == [("test-pbx", 486), ("test-pbx", 488), ("test-pbx", 200)]
    finally:
        phone.sock.close()
        await agent.stop()


@pytest.mark.asyncio
async def test_a_retransmitted_invite_is_answered_once(
    agent: SipAgent, phone: Phone, registry: FakeRegistry
) -> None:
    invite = phone.request("INVITE", body=OFFER.format(pts="8 0"))
    phone.send(invite)
    first = await phone.final()
    phone.send(invite)
    second = await phone.final()
    assert first.status == second.status == 200
    assert first.headers.get("To") == second.headers.get("To") and len(registry.streams) == 1
    assert b"RTP/AVP 0" in first.body  # our preference (PCMU first) among the offered codecs
    ack = (
        phone.request("ACK")
        .replace("CSeq: 1 ACK", "CSeq: 1 ACK")
        .replace("To: <sip:voxgate@127.0.0.1>", f"To: {first.headers.get('To')}")
        .replace(f"phone-{phone.n}@test", f"phone-{phone.n - 1}@test")
        .replace(f"tag=ph{phone.n}", f"tag=ph{phone.n - 1}")
    )
    phone.send(ack)
    bye = (
        phone.request("BYE")
        .replace("To: <sip:voxgate@127.0.0.1>", f"To: {first.headers.get('To')}")
        .replace(f"phone-{phone.n}@test", f"phone-{phone.n - 2}@test")
        .replace(f"tag=ph{phone.n}", f"tag=ph{phone.n - 2}")
        .replace("CSeq: 1 BYE", "CSeq: 2 BYE")
    )
    phone.send(bye)
    assert (await phone.final()).status == 200
    await registry.wait_closed(1)
    assert not agent.dialogs and not agent.ports.in_use


@pytest.mark.asyncio
async def test_cancel_before_the_answer(proxy: peers.Kamailio, registry: FakeRegistry) -> None:
    heard: list[tuple[str, int]] = []
    options = AgentOptions(answer_delay_s=1.0, on_call=lambda pbx, status: heard.append((pbx, status)))
    agent = SipAgent(pbx_config(proxy), registry, options)
    await agent.start()
    phone = Phone(agent)
    try:
        invite = phone.request("INVITE", body=OFFER.format(pts="0"), branch="z9hG4bKcancelme")
        phone.send(invite)
        ringing = None
        while ringing is None or ringing.status != 180:
            ringing = await phone.receive()
            assert ringing is not None
        cancel = (
            invite.split("\r\n\r\n")[0]
            .replace("INVITE sip:", "CANCEL sip:", 1)
            .replace("1 INVITE", "1 CANCEL")
        )
        cancel = cancel.replace("Content-Type: application/sdp\r\n", "")
        cancel = "\r\n".join(line for line in cancel.split("\r\n") if not line.startswith("Content-Length"))
        phone.send(cancel + "\r\nContent-Length: 0\r\n\r\n")
        statuses = {(await phone.final()).status, (await phone.final()).status}
        assert statuses == {200, 487}
        await asyncio.sleep(1.5)  # the delayed answer must not happen
        assert not agent.dialogs and not agent.ports.in_use
        assert all(s.closed for s in registry.streams.values())
        assert heard == [("test-pbx", 487)]
    finally:
        phone.sock.close()
        await agent.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["stop", "rtp_timeout"])
async def test_voxgate_hangs_up_through_the_proxy(
    how: str, proxy: peers.Kamailio, registry: FakeRegistry, tmp_path: Path
) -> None:
    timeout_s = 60.0 if how == "stop" else 1.5
    agent = SipAgent(pbx_config(proxy), registry, AgentOptions(rtp_timeout_s=timeout_s))
    await agent.start()
    try:
        await wait_registered(agent)
        sipp = asyncio.create_task(
            run_sipp(peers.sipp_command(HANGUP_XML, proxy, call_id=f"{how}-%u@test", timeout_s=30), tmp_path)
        )
        while not agent.dialogs:
            assert not sipp.done(), (await sipp).stdout
            await asyncio.sleep(0.05)
        (dialog,) = agent.dialogs.values()
        assert dialog.route_set and "lr" in dialog.route_set[0]  # Kamailio record-routed the call
        if how == "stop":
            await asyncio.wait_for(dialog.acked.wait(), 5)
            await agent.stop()
        result = await sipp
        assert result.returncode == 0, result.stdout
        await registry.wait_closed(1)
        (stream,) = registry.streams.values()
        assert stream.reason == ("pbx_stopped" if how == "stop" else "rtp_timeout")
        assert not agent.dialogs and not agent.ports.in_use
    finally:
        await agent.stop()
