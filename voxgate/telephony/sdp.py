"""SDP (RFC 4566, RFC 3264 offer/answer) for the one thing a recorder needs: one audio stream, G.711.

voxgate answers an offer with PCMU (payload type 0) or PCMA (8) at 8 kHz, whichever of its configured
codecs comes first among those the offer has, and only receives (``recvonly``).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from voxgate.errors import VoxgateError

SAMPLE_RATE_HZ = 8000
# static payload types (RFC 3551) a recorder can decode bit-exactly
CODECS = {"PCMU": 0, "PCMA": 8}
CODEC_NAMES = {pt: name for name, pt in CODECS.items()}


class SdpError(VoxgateError):
    """An SDP body that does not describe an audio stream we can receive."""


@dataclass
class MediaOffer:
    """The audio stream of an offer: where it comes from and what it may carry."""

    connection: str  # IP address of the sender (c= line)
    port: int
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (encoding, clock rate)
    direction: str = "sendrecv"
    ptime_ms: int | None = None

    def codec_of(self, payload_type: int) -> tuple[str, int] | None:
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        if payload_type in CODEC_NAMES:
            return CODEC_NAMES[payload_type], SAMPLE_RATE_HZ
        return None


def parse_offer(body: bytes) -> MediaOffer:
    """The first audio m= line of an SDP offer (with its connection address)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    session_connection: str | None = None
    session_direction = "sendrecv"
    media: MediaOffer | None = None
    in_audio = False
    seen_media = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            if media is not None:
                break  # only the first audio stream is ours
            seen_media = True
            parts = value.split()
            in_audio = len(parts) >= 4 and parts[0] == "audio" and parts[2].upper().startswith("RTP/")
            if in_audio:
                if not parts[1].split("/")[0].isdecimal():
                    raise SdpError(f"bad media port in {line!r}")
                pts = [int(p) for p in parts[3:] if p.isdecimal() and int(p) < 128]
                media = MediaOffer(
                    session_connection or "", int(parts[1].split("/")[0]), pts, direction=session_direction
                )
        elif kind == "c":
            address = _connection(value)
            if not seen_media:
                session_connection = address
            elif in_audio and media is not None:
                media.connection = address
        elif kind == "a":
            name, _, attribute = value.partition(":")
            if name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if not seen_media:
                    session_direction = name
                elif in_audio and media is not None:
                    media.direction = name
            elif in_audio and media is not None and name == "rtpmap":
                pt_text, _, encoding = attribute.partition(" ")
                enc = encoding.split("/")
                if pt_text.isdecimal() and len(enc) >= 2 and enc[1].isdecimal():
                    media.rtpmap[int(pt_text)] = (enc[0].upper(), int(enc[1]))
            elif in_audio and media is not None and name == "ptime" and attribute.strip().isdecimal():
                media.ptime_ms = int(attribute.strip())
    if media is None:
        raise SdpError("no audio stream in the offer")
    if not media.connection:
        raise SdpError("no connection address for the audio stream")
    if not 0 <= media.port < 65536:
        raise SdpError(f"bad media port {media.port}")
    return media


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"unsupported connection line c={value}")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise SdpError(f"connection address {address!r} is not an IP address") from exc
    return address


def choose_codec(offer: MediaOffer, preferences: list[str]) -> int | None:
    """The payload type to receive: our first preferred codec the offer has at 8 kHz; None if none."""
    for name in preferences:
        for pt in offer.payload_types:
            codec = offer.codec_of(pt)
            if codec is not None and codec[0] == name.upper() and codec[1] == SAMPLE_RATE_HZ:
                return pt
    return None


def answer(
    offer: MediaOffer, local_ip: str, port: int, payload_type: int, session_id: int | None = None
) -> bytes:
    """Our answer: one audio stream, one codec, receive only (``inactive`` if the offer will not send)."""
    name = CODEC_NAMES.get(payload_type) or (offer.codec_of(payload_type) or ("PCMU", 8000))[0]
    ip_kind = "IP6" if ":" in local_ip else "IP4"
    direction = "recvonly" if offer.direction in ("sendrecv", "sendonly") else "inactive"
    sid = session_id if session_id is not None else int(time.time())
    lines = [
        "v=0",
        f"o=voxgate {sid} {sid} IN {ip_kind} {local_ip}",
        "s=voxgate",
        f"c=IN {ip_kind} {local_ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} {name}/{SAMPLE_RATE_HZ}",
        "a=ptime:20",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
