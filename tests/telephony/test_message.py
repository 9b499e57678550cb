"""SIP messages: what real peers send parses, every field survives a round trip, malformed input only
ever raises SipParseError."""

from __future__ import annotations

import contextlib
import random

import pytest

from voxgate.telephony.sip.message import (
    SipParseError,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
    split_list,
)

INVITE = (
    b"INVITE sip:voxgate@127.0.0.1:5070;transport=udp SIP/2.0\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr=on;ftag=abc>\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n"
    b"v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy;rport\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:41000;received=127.0.0.1;rport=41000;branch=z9hG4bKsipp\r\n"
    b'f: "Alice, A." <sip:alice@127.0.0.1:41000>;tag=1234\r\n'
    b"t: <sip:voxgate@127.0.0.1:5060>\r\n"
    b"i: abc-1@test\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@127.0.0.1:41000>\r\n"
    b"Subject: folded\r\n  across lines\r\n"
    b"Max-Forwards: 69\r\n"
    b"c: application/sdp\r\n"
    b"l: 10\r\n"
    b"\r\n"
    b"v=0\r\nxxxxxtrailing garbage beyond the length"
)


def test_a_record_routed_invite() -> None:
    message = parse_message(INVITE)
    assert message.method == "INVITE" and message.uri == "sip:voxgate@127.0.0.1:5070;transport=udp"
    assert message.headers.get_all("Record-Route") == [
        "<sip:127.0.0.1:5060;lr=on;ftag=abc>",
        "<sip:10.0.0.1;lr>",
        "<sip:10.0.0.2;lr>",
    ]
    assert [parse_via(v).branch for v in message.headers.get_all("Via")] == ["z9hG4bKproxy", "z9hG4bKsipp"]
    assert message.call_id == "abc-1@test" and message.cseq() == (1, "INVITE")
    assert message.headers.get("Subject") == "folded across lines"
    assert message.body == b"v=0\r\nxxxxx"
    sender = parse_name_addr(message.headers.get("From") or "")
    assert (sender.display, sender.uri, sender.tag) == ('"Alice, A."', "sip:alice@127.0.0.1:41000", "1234")


def test_round_trip_keeps_every_header_in_order() -> None:
    message = parse_message(INVITE)
    again = parse_message(message.encode())
    assert again.headers.items == message.headers.items
    assert (again.method, again.uri, again.body) == (message.method, message.uri, message.body)


def test_a_response_copies_via_record_route_and_adds_our_tag() -> None:
    message = parse_message(INVITE)
    ok = parse_message(response_to(message, 200, "OK", to_tag="ours").encode())
    assert ok.status == 200 and ok.reason == "OK"
    assert ok.headers.get_all("Via") == message.headers.get_all("Via")
    assert ok.headers.get_all("Record-Route") == message.headers.get_all("Record-Route")
    assert parse_name_addr(ok.headers.get("To") or "").tag == "ours"
    busy = parse_message(response_to(message, 486, "Busy Here", to_tag="ours").encode())
    assert busy.headers.get_all("Record-Route") == []


def test_uris() -> None:
    uri = parse_uri("sip:alice:secret@[::1]:5080;transport=udp;lr?subject=x")
    assert (uri.user, uri.host, uri.port, uri.params, uri.headers) == (
        "alice",
        "::1",
        5080,
        {"transport": "udp", "lr": ""},
        "subject=x",
    )
    assert "secret" not in str(uri)
    assert parse_uri(str(uri)) == uri
    assert parse_uri("sip:pbx.example.com").port is None


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y>;p=1, <sip:z@w;q=2,3>') == ['"a, b" <sip:x@y>;p=1', "<sip:z@w;q=2,3>"]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\r\n\r\n",
        b"HELLO\r\n\r\n",
        b"INVITE sip:x@y SIP/3.0\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
        INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        INVITE.replace(b"i: abc-1@test\r\n", b""),
        INVITE.replace(b"l: 10", b"l: 9999"),
        INVITE.replace(b"l: 10", b"l: -1"),
        INVITE.replace(b"Max-Forwards: 69", b"Max Forwards 69"),
        INVITE.replace(b"Subject", b"\xff\xfe"),
        b"INVITE sip:x@y SIP/2.0\r\n" + b"X: y\r\n" * 20000,
    ],
)
def test_malformed_messages_raise_sip_parse_error(bad: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(bad)


@pytest.mark.parametrize(
    "bad", ["", "sip:", "http://x", "sip:user@", "sip:[::1", "sip:host:99999", "sip:host:x"]
)
def test_malformed_uris(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(bad)


@pytest.mark.parametrize("bad", ["", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP host:0", "HTTP/1.1/TCP h"])
def test_malformed_vias(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(bad)


def test_fuzzed_messages_never_raise_anything_else() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(INVITE)
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            position = rng.randrange(len(data))
            if kind < 0.4:
                data[position] = rng.randrange(256)
            elif kind < 0.7:
                del data[position : position + rng.randint(1, 40)]
            else:
                data[position:position] = rng.choice([b":", b"\r\n", b";", b"<", b">", b'"', b",", b" "])
        try:
            message = parse_message(bytes(data))
        except SipParseError:
            continue
        for value in message.headers.get_all("Via"):
            with contextlib.suppress(SipParseError):
                parse_via(value)
        for name in ("From", "To", "Contact", "Record-Route"):
            for value in message.headers.get_all(name):
                with contextlib.suppress(SipParseError):
                    parse_uri(parse_name_addr(value).uri)
