"""G.711 against the standard: all 256 codes both ways, every int16 input, and CPython's audioop.

The oracle below is written from the G.711 tables (decision and reconstruction values per segment) and
finds codes by searching decision levels, a different algorithm from the bit manipulation under test.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest
from numpy.typing import NDArray

from voxgate.audio import g711
from voxgate.audio.frames import pcm16_to_float

ALL_CODES = np.arange(256, dtype=np.uint8)
ALL_PCM16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


# --- the oracle, from ITU-T G.711 Tables 1a (A-law) and 2a (µ-law) ------------------------------------


def spec_ulaw_decode(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    """Table 2a: segment s, step q -> 14-bit value 2^(s+1) (q + 16.5) - 33; the character is sent with
    all bits inverted, sign bit (before inversion) 0 = positive; 16-bit output = 14-bit value x 4."""
    character = (~codes.astype(np.int64)) & 0xFF
    negative, segment, step = character >> 7, (character >> 4) & 7, character & 15
    magnitude_14 = 2.0 ** (segment + 1) * (step + 16.5) - 33
    decoded: NDArray[np.int16] = (np.where(negative == 1, -1, 1) * magnitude_14 * 4).astype(np.int16)
    return decoded


def spec_alaw_decode(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    """Table 1a: segment 0 -> 12-bit value q + 0.5, segment s >= 1 -> 2^(s-1) (q + 16.5); sign bit
    1 = positive; sent with the even bits inverted (XOR 0x55); 16-bit output = 12-bit value x 16."""
    character = codes.astype(np.int64) ^ 0x55
    positive, segment, step = character >> 7, (character >> 4) & 7, character & 15
    magnitude_12 = np.where(segment == 0, step + 0.5, 2.0 ** (segment - 1) * (step + 16.5))
    return (np.where(positive == 1, 1, -1) * magnitude_12 * 16).astype(np.int16)


def _magnitude(pcm16: NDArray[np.int16], drop_bits: int) -> NDArray[np.int64]:
    # The top bits of the 16-bit word; a negative value's magnitude is its one's complement, as in the
    # ITU-T G.191 reference (so -1 is the smallest negative level, mirroring 0).
    x = pcm16.astype(np.int64)
    return np.where(x < 0, (-x - 1) >> drop_bits, x >> drop_bits)


def spec_ulaw_encode(pcm16: NDArray[np.int16]) -> NDArray[np.uint8]:
    """The interval index is the count of Table 2a upper decision values 2^(s+1) (q + 17) - 33 <= |x|."""
    segment, step = np.divmod(np.arange(128), 16)
    upper_decision_14 = 2 ** (segment + 1) * (step + 17) - 33
    index = np.minimum(np.searchsorted(upper_decision_14, _magnitude(pcm16, 2), side="right"), 127)
    negative = pcm16 < 0
    return (~((negative.astype(np.int64) << 7) | index) & 0xFF).astype(np.uint8)


def spec_alaw_encode(pcm16: NDArray[np.int16]) -> NDArray[np.uint8]:
    """The interval index is the count of Table 1a upper decision values <= |x| (12-bit): q + 1 in
    segment 0, 2^(s-1) (q + 17) above."""
    segment, step = np.divmod(np.arange(128), 16)
    upper_decision_12 = np.where(segment == 0, step + 1, 2 ** np.maximum(segment - 1, 0) * (step + 17))
    index = np.minimum(np.searchsorted(upper_decision_12, _magnitude(pcm16, 4), side="right"), 127)
    positive = pcm16 >= 0
    return (((positive.astype(np.int64) << 7) | index) ^ 0x55).astype(np.uint8)


# --- the tests --------------------------------------------------------------------------------------


def test_oracle_reconstruction_values_sit_inside_their_decision_intervals() -> None:
    """A sanity check of the oracle itself: encoding each reconstruction value gives back its code."""
    assert np.array_equal(spec_alaw_encode(spec_alaw_decode(ALL_CODES)), ALL_CODES)
    ulaw_back = spec_ulaw_encode(spec_ulaw_decode(ALL_CODES))
    # µ-law has a +0 (0xFF) and a -0 (0x7F); both decode to 0, which encodes as +0
    assert np.array_equal(ulaw_back, np.where(ALL_CODES == 0x7F, 0xFF, ALL_CODES))


def test_decode_all_256_codes_matches_the_spec() -> None:
    assert np.array_equal(g711.ulaw_decode(ALL_CODES), spec_ulaw_decode(ALL_CODES))
    assert np.array_equal(g711.alaw_decode(ALL_CODES), spec_alaw_decode(ALL_CODES))
    assert g711.ulaw_decode(ALL_CODES).dtype == np.int16
    # well-known anchor values: full scale and the smallest levels
    assert g711.ulaw_decode(np.array([0x00, 0x80, 0xFF, 0x7F], dtype=np.uint8)).tolist() == [
        -32124,
        32124,
        0,
        0,
    ]
    assert g711.alaw_decode(np.array([0x2A, 0xAA, 0xD5, 0x55], dtype=np.uint8)).tolist() == [
        -32256,
        32256,
        8,
        -8,
    ]


def test_encode_every_int16_matches_the_spec() -> None:
    assert np.array_equal(g711.ulaw_encode(ALL_PCM16), spec_ulaw_encode(ALL_PCM16))
    assert np.array_equal(g711.alaw_encode(ALL_PCM16), spec_alaw_encode(ALL_PCM16))
    assert g711.ulaw_encode(ALL_PCM16).dtype == np.uint8


def test_all_256_codes_round_trip() -> None:
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)
    expected = np.where(ALL_CODES == 0x7F, 0xFF, ALL_CODES)  # -0 comes back as +0
    assert np.array_equal(g711.ulaw_encode(g711.ulaw_decode(ALL_CODES)), expected)


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 3.11, removed in 3.13
        module: ModuleType = pytest.importorskip("audioop")
    return module


def test_against_audioop() -> None:
    """CPython's audioop (Sun's g711.c) agrees on all decoding and on A-law encoding; its µ-law encoder
    takes the two's complement of negative inputs, the ITU reference the one's complement, so there a
    negative x is checked as the mirror of the positive ~x."""
    audioop = _audioop()
    codes = ALL_CODES.tobytes()
    assert np.array_equal(g711.ulaw_decode(ALL_CODES), np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"))
    assert np.array_equal(g711.alaw_decode(ALL_CODES), np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"))

    pcm = ALL_PCM16.astype("<i2").tobytes()
    assert np.array_equal(g711.alaw_encode(ALL_PCM16), np.frombuffer(audioop.lin2alaw(pcm, 2), np.uint8))
    sun_ulaw = np.frombuffer(audioop.lin2ulaw(pcm, 2), np.uint8)
    non_negative = ALL_PCM16 >= 0
    assert np.array_equal(g711.ulaw_encode(ALL_PCM16)[non_negative], sun_ulaw[non_negative])
    negative = ALL_PCM16[~non_negative]
    mirrored = np.frombuffer(audioop.lin2ulaw((~negative).astype("<i2").tobytes(), 2), np.uint8) & 0x7F
    assert np.array_equal(g711.ulaw_encode(negative), mirrored)


def test_float_helpers_are_the_int16_tables_scaled_by_32768() -> None:
    assert np.array_equal(g711.ulaw_decode_float(ALL_CODES), pcm16_to_float(g711.ulaw_decode(ALL_CODES)))
    assert np.array_equal(g711.alaw_decode_float(ALL_CODES), pcm16_to_float(g711.alaw_decode(ALL_CODES)))
    as_float = pcm16_to_float(ALL_PCM16)
    assert np.array_equal(g711.ulaw_encode_float(as_float), g711.ulaw_encode(ALL_PCM16))
    assert np.array_equal(g711.alaw_encode_float(as_float), g711.alaw_encode(ALL_PCM16))
    assert g711.ulaw_decode_float(ALL_CODES).dtype == np.float32
    # out-of-range floats clip to full scale instead of wrapping around
    assert (
        g711.ulaw_encode_float(np.array([1.5, -1.5])).tolist()
        == g711.ulaw_encode(np.array([32767, -32768], dtype=np.int16)).tolist()
    )


def test_decode_takes_an_rtp_payload_as_bytes() -> None:
    payload = bytes(range(256))
    assert np.array_equal(g711.ulaw_decode(payload), g711.ulaw_decode(ALL_CODES))
    assert np.array_equal(g711.alaw_decode(bytearray(payload)), g711.alaw_decode(ALL_CODES))
    assert np.array_equal(g711.ulaw_decode_float(memoryview(payload)), g711.ulaw_decode_float(ALL_CODES))


def test_wrong_dtypes_are_refused_not_wrapped() -> None:
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.array([40000], dtype=np.int32))
    with pytest.raises(TypeError, match="uint8"):
        g711.alaw_decode(np.array([1, 2], dtype=np.int64))


def test_tables_cannot_be_modified_by_accident() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711._ULAW_DECODE[0] = 1
    decoded = g711.ulaw_decode(ALL_CODES)
    decoded[0] = 1  # what callers get is their own copy
    assert g711.ulaw_decode(ALL_CODES)[0] == -32124
