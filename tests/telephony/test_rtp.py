"""RTP in: parsing, reordering of late packets, loss as silence, the source check, decoding."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import pytest

from voxgate.audio.g711 import alaw_decode_float, alaw_encode, ulaw_decode_float
from voxgate.telephony.rtp import Depacketizer, ReorderBuffer, RtpPacket, RtpReceiver, encode_rtp, parse_rtp

FRAME = 160


def _packets(
    codes: npt.NDArray[np.uint8], pt: int = 0, seq0: int = 65530, ts0: int = 2**32 - 480
) -> list[RtpPacket]:
    return [
        RtpPacket(
            pt,
            (seq0 + i) & 0xFFFF,
            (ts0 + i * FRAME) & 0xFFFFFFFF,
            7,
            i == 0,
            codes[i * FRAME : (i + 1) * FRAME].tobytes(),
        )
        for i in range(codes.size // FRAME)
    ]


def _codes(n: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, n * FRAME).astype(np.uint8)


class Collect:
    def __init__(self) -> None:
        self.parts: list[npt.NDArray[np.float32]] = []

    def __call__(self, samples: npt.NDArray[np.float32]) -> None:
        self.parts.append(samples)

    @property
    def audio(self) -> npt.NDArray[np.float32]:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def _receive(packets: list[RtpPacket], pt: int = 0, depth: int = 5) -> npt.NDArray[np.float32]:
    sink = Collect()
    receiver = RtpReceiver(sink, "127.0.0.1", frozenset({pt}), depth=depth)
    for packet in packets:
        receiver.datagram_received(encode_rtp(packet), ("127.0.0.1", 40000))
    receiver.flush()
    return sink.audio


def test_parse_round_trip_with_csrc_extension_and_padding() -> None:
    packet = RtpPacket(8, 1, 2, 3, True, b"\x01\x02\x03")
    assert parse_rtp(encode_rtp(packet)) == packet
    # CSRC count 1, an extension of one word, 2 bytes of padding
    header = (
        struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 8, 1, 2, 3) + b"CSRC" + b"\xbe\xde\x00\x01" + b"EXT!"
    )
    parsed = parse_rtp(header + b"\x01\x02\x03" + b"\x00\x02")
    assert parsed is not None and parsed.payload == b"\x01\x02\x03"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x80\x00",
        b"\x40" + b"\x00" * 20,
        b"\x80\xc8" + b"\x00" * 20,
        b"\x81\x00" + b"\x00" * 10,
        b"\xa0\x00" + b"\x00" * 9 + b"\xff",
    ],
)
def test_not_rtp_is_none(bad: bytes) -> None:
    assert parse_rtp(bad) is None


def test_in_order_stream_decodes_exactly_across_wraparound() -> None:
    codes = _codes(12)
    np.testing.assert_array_equal(_receive(_packets(codes)), ulaw_decode_float(codes))
    np.testing.assert_array_equal(_receive(_packets(codes, pt=8), pt=8), alaw_decode_float(codes))


def test_pcma_polarity_and_full_resolution() -> None:
    ramp = np.array([-32768, -1000, -1, 0, 1, 1000, 32767] * 60, dtype=np.int16)[: 2 * FRAME]
    audio = _receive(_packets(alaw_encode(ramp), pt=8), pt=8)
    assert np.all(np.sign(audio[ramp > 100]) == 1) and np.all(np.sign(audio[ramp < -100]) == -1)
    assert np.abs(audio * 32768 - ramp).max() <= 1024  # 16-bit scale, not 8-bit


def test_late_packets_are_put_back_in_order() -> None:
    codes = _codes(10)
    packets = _packets(codes)
    shuffled = [packets[0], packets[2], packets[1], packets[5], packets[3], packets[4], *packets[6:]]
    np.testing.assert_array_equal(_receive(shuffled), ulaw_decode_float(codes))


def test_loss_is_silence_and_too_late_is_dropped() -> None:
    codes = _codes(12)
    packets = _packets(codes)
    lost = [p for i, p in enumerate(packets) if i != 3]
    lost.append(packets[3])  # arrives after the buffer gave up on it: dropped
    audio = _receive(lost, depth=3)
    expected = ulaw_decode_float(codes).copy()
    expected[3 * FRAME : 4 * FRAME] = 0
    np.testing.assert_array_equal(audio, expected)


def test_duplicates_are_dropped() -> None:
    codes = _codes(6)
    packets = _packets(codes)
    np.testing.assert_array_equal(_receive([p for p in packets for _ in (0, 1)]), ulaw_decode_float(codes))


def test_silence_suppression_gap_is_filled_by_timestamp() -> None:
    codes = _codes(4)
    packets = _packets(codes)
    later = RtpPacket(
        0,
        (packets[-1].sequence + 1) & 0xFFFF,
        (packets[-1].timestamp + 5 * FRAME) & 0xFFFFFFFF,
        7,
        True,
        codes[:FRAME].tobytes(),
    )
    audio = _receive([*packets, later])
    assert audio.size == 4 * FRAME + 4 * FRAME + FRAME
    assert not audio[4 * FRAME : 8 * FRAME].any()


def test_source_check_latches_the_first_sender() -> None:
    codes = _codes(6)
    packets = _packets(codes)
    sink = Collect()
    receiver = RtpReceiver(sink, "127.0.0.1", frozenset({0}))
    receiver.datagram_received(encode_rtp(packets[0]), ("192.0.2.66", 40000))  # not the SDP's address
    for packet in packets:
        receiver.datagram_received(encode_rtp(packet), ("127.0.0.1", 40000))
        receiver.datagram_received(encode_rtp(packet), ("127.0.0.1", 40002))  # same host, other port
    receiver.datagram_received(b"garbage", ("127.0.0.1", 40000))
    receiver.flush()
    assert receiver.rejected == 1 + len(packets) + 1
    np.testing.assert_array_equal(sink.audio, ulaw_decode_float(codes))


def test_other_payload_types_are_ignored() -> None:
    codes = _codes(4)
    packets = _packets(codes)
    dtmf = RtpPacket(101, packets[1].sequence, packets[1].timestamp, 7, False, b"\x01\x00\x00\xa0")
    mixed = [packets[0], dtmf, *packets[2:]]
    audio = _receive(mixed)
    expected = ulaw_decode_float(codes).copy()
    expected[FRAME : 2 * FRAME] = 0  # the DTMF event's place is silence
    np.testing.assert_array_equal(audio, expected)


def test_reorder_buffer_restarts_on_a_sequence_jump() -> None:
    buffer = ReorderBuffer(depth=3)
    assert [p.sequence for p in buffer.push(RtpPacket(0, 10, 0, 1, False, b"x"))] == [10]
    assert [p.sequence for p in buffer.push(RtpPacket(0, 30000, 0, 1, False, b"x"))] == [30000]
    assert [p.sequence for p in buffer.push(RtpPacket(0, 30001, 0, 1, False, b"x"))] == [30001]


def test_depacketizer_ignores_timestamp_jumps_backwards() -> None:
    depacketizer = Depacketizer(frozenset({0}))
    first = depacketizer.decode([RtpPacket(0, 1, 1000, 1, False, b"\xff" * FRAME)])
    second = depacketizer.decode([RtpPacket(0, 2, 500, 1, False, b"\xff" * FRAME)])
    assert sum(a.size for a in first + second) == FRAME  # audio for a place already played
