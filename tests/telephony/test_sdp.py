"""SDP offers as PBXes write them, the codec choice, and our answer."""

from __future__ import annotations

import pytest

from voxgate.telephony.sdp import SdpError, answer, choose_codec, parse_offer

ASTERISK_OFFER = b"""v=0\r
o=- 1618 1618 IN IP4 10.0.0.5\r
s=Asterisk\r
c=IN IP4 10.0.0.5\r
t=0 0\r
m=audio 14380 RTP/AVP 8 0 3 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:3 GSM/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
"""


def test_an_asterisk_offer() -> None:
    offer = parse_offer(ASTERISK_OFFER)
    assert (offer.connection, offer.port, offer.payload_types) == ("10.0.0.5", 14380, [8, 0, 3, 101])
    assert offer.direction == "sendrecv" and offer.ptime_ms == 20
    assert choose_codec(offer, ["PCMU", "PCMA"]) == 0
    assert choose_codec(offer, ["PCMA"]) == 8


def test_static_types_without_rtpmap_and_media_level_connection() -> None:
    offer = parse_offer(
        b"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 18 0\nc=IN IP4 192.0.2.7\n"
    )
    assert offer.connection == "192.0.2.7" and choose_codec(offer, ["PCMA", "PCMU"]) == 0


def test_no_common_codec() -> None:
    offer = parse_offer(b"v=0\nc=IN IP4 1.2.3.4\nm=audio 4000 RTP/AVP 9 18\na=rtpmap:9 G722/8000\n")
    assert choose_codec(offer, ["PCMU", "PCMA"]) is None
    wideband = parse_offer(b"v=0\nc=IN IP4 1.2.3.4\nm=audio 4000 RTP/AVP 96\na=rtpmap:96 PCMU/16000\n")
    assert choose_codec(wideband, ["PCMU"]) is None


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xff\xfe",
        b"v=0\nm=video 4000 RTP/AVP 96\nc=IN IP4 1.2.3.4\n",
        b"v=0\nm=audio 4000 RTP/AVP 0\n",
        b"v=0\nc=IN IP4 pbx.example.com\nm=audio 4000 RTP/AVP 0\n",
        b"v=0\nc=IN IP4 1.2.3.4\nm=audio x RTP/AVP 0\n",
        b"v=0\nc=IN IP4 1.2.3.4\nm=audio 99999 RTP/AVP 0\n",
    ],
)
def test_unusable_offers_raise_sdp_error(bad: bytes) -> None:
    with pytest.raises(SdpError):
        parse_offer(bad)


def test_answer_receives_one_codec() -> None:
    offer = parse_offer(ASTERISK_OFFER)
    text = answer(offer, "127.0.0.1", 20000, 8, session_id=7).decode()
    assert "m=audio 20000 RTP/AVP 8\r\n" in text and "a=rtpmap:8 PCMA/8000" in text
    assert "c=IN IP4 127.0.0.1" in text and "a=recvonly" in text
    held = parse_offer(ASTERISK_OFFER.replace(b"a=sendrecv", b"a=recvonly"))
    assert "a=inactive" in answer(held, "127.0.0.1", 20000, 0).decode()
