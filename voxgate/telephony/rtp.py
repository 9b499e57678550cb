"""RTP in (RFC 3550): packets -> in-order G.711 audio, loss as silence, one expected source.

The door of a SIP call only translates (STYLE.md 5): datagrams become float32 samples at 8 kHz, nothing
more. Three things happen on the way:

- **source check**: only datagrams from the address the SDP offer named are taken; the first one latches
  the sender's port (symmetric RTP), and anything from elsewhere afterwards is dropped and counted;
- **reordering**: packets wait in a small buffer (``depth`` packets, 100 ms by default) so late ones are
  put back in sequence; one that comes after its place was played is dropped;
- **loss as silence**: the RTP timestamp says where each packet belongs; a gap (lost packets, or a sender
  that suppresses silence) becomes zeros, up to ``MAX_GAP_S`` (a larger jump is a new timeline).

Decoding is :mod:`voxgate.audio.g711` (bit-exact ITU-T G.711), one table lookup per payload.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from voxgate.audio.g711 import alaw_decode_float, ulaw_decode_float
from voxgate.audio.types import FloatArray

log = logging.getLogger(__name__)

PCMU, PCMA = 0, 8
DECODERS: dict[int, Callable[[bytes], FloatArray]] = {PCMU: ulaw_decode_float, PCMA: alaw_decode_float}
SAMPLE_RATE_HZ = 8000
MAX_GAP_S = 2.0  # a timestamp gap up to this long is filled with silence
REORDER_DEPTH = 5  # packets held for reordering (5 x 20 ms)
MAX_JUMP = 1000  # a sequence jump beyond this many packets restarts the stream's numbering
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """One RTP packet, or None for anything that is not (RTCP, STUN, garbage)."""
    if len(data) < _HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        return None
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:  # RTCP multiplexed on the port (RFC 5761)
        return None
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(payload_type, sequence, timestamp, ssrc, bool(second & 0x80), bytes(data[offset:end]))


def encode_rtp(packet: RtpPacket) -> bytes:
    """The wire form (no CSRC, extension or padding); tests and test tools build streams with it."""
    second = (0x80 if packet.marker else 0) | packet.payload_type
    return (
        _HEADER.pack(0x80, second, packet.sequence & 0xFFFF, packet.timestamp & 0xFFFFFFFF, packet.ssrc)
        + packet.payload
    )


class ReorderBuffer:
    """Packets in, packets out in sequence order; late ones dropped, a hole given up on when full."""

    def __init__(self, depth: int = REORDER_DEPTH) -> None:
        self.depth = depth
        self.late = 0  # packets that came after their place was passed (or duplicates)
        self.lost = 0  # sequence numbers given up on
        self._next: int | None = None  # extended sequence number expected next
        self._held: dict[int, RtpPacket] = {}

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        if self._next is None:
            self._next = packet.sequence
        delta = ((packet.sequence - self._next + 0x8000) & 0xFFFF) - 0x8000
        if delta > MAX_JUMP or delta < -MAX_JUMP:  # the sender restarted its numbering
            out = self.drain()
            self._next = packet.sequence
            delta = 0
        else:
            out = []
        extended = self._next + delta
        if extended < self._next or extended in self._held:
            self.late += 1
            return out
        self._held[extended] = packet
        out += self._release()
        while len(self._held) > self.depth:  # the hole at _next will not be filled in time
            first = min(self._held)
            self.lost += first - self._next
            self._next = first
            out += self._release()
        return out

    def _release(self) -> list[RtpPacket]:
        out = []
        assert self._next is not None
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out

    def drain(self) -> list[RtpPacket]:
        """Everything held, in order (the call ended or the numbering restarted)."""
        out = [self._held[k] for k in sorted(self._held)]
        if out and self._next is not None:
            self.lost += max(0, max(self._held) + 1 - self._next - len(out))
            self._next = max(self._held) + 1
        self._held.clear()
        return out


class Depacketizer:
    """In-order packets -> float32 samples, timestamp gaps as silence."""

    def __init__(self, payload_types: frozenset[int] = frozenset(DECODERS)) -> None:
        self.payload_types = payload_types
        self.silence_samples = 0
        self._expected_ts: int | None = None

    def decode(self, packets: list[RtpPacket]) -> list[FloatArray]:
        out: list[FloatArray] = []
        for packet in packets:
            decoder = DECODERS.get(packet.payload_type)
            if decoder is None or packet.payload_type not in self.payload_types or not packet.payload:
                continue  # comfort noise, DTMF events, a codec we did not agree on
            if self._expected_ts is not None:
                gap = ((packet.timestamp - self._expected_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                if 0 < gap <= MAX_GAP_S * SAMPLE_RATE_HZ:
                    out.append(np.zeros(gap, dtype=np.float32))
                    self.silence_samples += gap
                elif gap < 0 and -gap >= len(packet.payload):
                    continue  # audio for a place already played (a duplicate under a new number)
            out.append(decoder(packet.payload))
            self._expected_ts = (packet.timestamp + len(packet.payload)) & 0xFFFFFFFF
        return out


AudioSink = Callable[[FloatArray], None]


class RtpReceiver(asyncio.DatagramProtocol):
    """One call's RTP port: checks the source, reorders, decodes, hands samples to ``sink``."""

    def __init__(
        self,
        sink: AudioSink,
        remote_ip: str,
        payload_types: frozenset[int],
        *,
        depth: int = REORDER_DEPTH,
        on_packet: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.remote_ip = _normal_ip(remote_ip)
        self.any_source = self.remote_ip in ("0.0.0.0", "::")  # an offer that hides its address (hold)
        self.source: tuple[str, int] | None = None
        self.ssrc: int | None = None
        self.packets = 0
        self.rejected = 0  # datagrams from the wrong source, or not RTP
        self.transport: asyncio.DatagramTransport | None = None
        self._reorder = ReorderBuffer(depth)
        self._depacketizer = Depacketizer(payload_types)
        self._on_packet = on_packet

    @property
    def late(self) -> int:
        return self._reorder.late

    @property
    def lost(self) -> int:
        return self._reorder.lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (_normal_ip(str(addr[0])), int(addr[1]))
        if self.source is None:
            if not self.any_source and source[0] != self.remote_ip:
                self.rejected += 1
                return
        elif source != self.source:
            self.rejected += 1
            return
        packet = parse_rtp(data)
        if packet is None:
            self.rejected += 1
            return
        if self.source is None:
            self.source = source  # latch: from now on only this address and port
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            self._emit(self._reorder.drain())  # a new sender behind the same address (transfer)
            self._reorder = ReorderBuffer(self._reorder.depth)
        self.ssrc = packet.ssrc
        self.packets += 1
        if self._on_packet is not None:
            self._on_packet()
        self._emit(self._reorder.push(packet))

    def flush(self) -> None:
        """Hand over what the reorder buffer still holds (the call is ending)."""
        self._emit(self._reorder.drain())

    def _emit(self, packets: list[RtpPacket]) -> None:
        if packets:
            for samples in self._depacketizer.decode(packets):
                self.sink(samples)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like: nothing to do
        log.debug("RTP socket error: %s", exc)


def _normal_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
