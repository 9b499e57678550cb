"""ITU-T G.711 µ-law and A-law, by table lookup.

Bit-exact with the ITU-T reference implementation (G.191 Software Tool Library, ``g711.c``:
``ulaw_compress/ulaw_expand/alaw_compress/alaw_expand``). Both laws take the magnitude of a negative
sample as its one's complement. For A-law that is also what the classic Sun ``g711.c`` (and CPython's
``audioop``) do; for µ-law those use the two's complement, so 508 of the 32768 negative int16 inputs (those
on a decision boundary) get the adjacent code. We follow the ITU reference, as WebRTC and SpanDSP do.

Encoding is one lookup in a 65536-entry table (all int16 inputs), decoding one lookup in a 256-entry
table: no per-sample Python work, and the tables are built once, vectorised, at import.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voxgate.audio.frames import PCM16_FULL_SCALE, float_to_pcm16

_ALL_PCM16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
# ^ every int16 value, ordered by its uint16 bit pattern, so ``table[pcm16.view(np.uint16)]`` encodes
_ALL_CODES = np.arange(256, dtype=np.int32)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    x = _ALL_PCM16
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33  # 14-bit magnitude (one's complement) + bias 33
    absno = np.minimum(absno, 0x1FFF)
    segno = 1 + np.searchsorted(np.array([64, 128, 256, 512, 1024, 2048, 4096]), absno, side="right")
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    high_nibble = 0x08 - segno
    code = (high_nibble << 4) | low_nibble
    codes: NDArray[np.uint8] = np.where(x >= 0, code | 0x80, code).astype(np.uint8)
    return codes


def _build_alaw_encode() -> NDArray[np.uint8]:
    x = _ALL_PCM16
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude (one's complement)
    # segment = bit length - 4 for magnitudes >= 16; the mantissa is the 4 bits under the leading one
    iexp = np.searchsorted(np.array([16, 32, 64, 128, 256, 512, 1024]), ix, side="right")
    mantissa = np.where(iexp > 0, (ix >> np.maximum(iexp - 1, 0)) - 16, ix)
    code = (iexp << 4) + mantissa
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    u = ~_ALL_CODES & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode() -> NDArray[np.int16]:
    a = _ALL_CODES ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()  # (65536,) indexed by the int16's bit pattern
_ALAW_ENCODE = _build_alaw_encode()
_ULAW_DECODE = _build_ulaw_decode()  # (256,) indexed by code
_ALAW_DECODE = _build_alaw_decode()
_ULAW_DECODE_FLOAT = (_ULAW_DECODE / np.float32(PCM16_FULL_SCALE)).astype(np.float32)
_ALAW_DECODE_FLOAT = (_ALAW_DECODE / np.float32(PCM16_FULL_SCALE)).astype(np.float32)
_TABLES = (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE, _ULAW_DECODE_FLOAT, _ALAW_DECODE_FLOAT)
for _table in _TABLES:
    _table.flags.writeable = False  # shared module state: nobody may patch a codec table by accident


def _as_pcm16(pcm16: ArrayLike) -> NDArray[np.int16]:
    array = np.asarray(pcm16)
    if array.dtype != np.int16:  # refuse silently wrapping int32 or scaling floats
        raise TypeError(f"G.711 encoding takes int16 samples, got {array.dtype} (use the *_float helpers)")
    return array


def _as_codes(codes: bytes | bytearray | memoryview | ArrayLike) -> NDArray[np.uint8]:
    if isinstance(codes, bytes | bytearray | memoryview):
        return np.frombuffer(codes, dtype=np.uint8)
    array = np.asarray(codes)
    if array.dtype != np.uint8:
        raise TypeError(f"G.711 codes are uint8 (or bytes), got {array.dtype}")
    return array


def ulaw_encode(pcm16: NDArray[np.int16]) -> NDArray[np.uint8]:
    """int16 samples -> µ-law codes (same shape)."""
    return _ULAW_ENCODE[_as_pcm16(pcm16).view(np.uint16)]


def alaw_encode(pcm16: NDArray[np.int16]) -> NDArray[np.uint8]:
    """int16 samples -> A-law codes (same shape)."""
    return _ALAW_ENCODE[_as_pcm16(pcm16).view(np.uint16)]


def ulaw_decode(codes: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.int16]:
    """µ-law codes (an RTP PCMU payload, or uint8 array) -> int16 samples."""
    return _ULAW_DECODE[_as_codes(codes)]


def alaw_decode(codes: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.int16]:
    """A-law codes (an RTP PCMA payload, or uint8 array) -> int16 samples."""
    return _ALAW_DECODE[_as_codes(codes)]


def ulaw_encode_float(samples: ArrayLike) -> NDArray[np.uint8]:
    """float samples in [-1, 1] -> µ-law codes (rounded to int16 first, clipped at full scale)."""
    return _ULAW_ENCODE[float_to_pcm16(samples).view(np.uint16)]


def alaw_encode_float(samples: ArrayLike) -> NDArray[np.uint8]:
    """float samples in [-1, 1] -> A-law codes (rounded to int16 first, clipped at full scale)."""
    return _ALAW_ENCODE[float_to_pcm16(samples).view(np.uint16)]


def ulaw_decode_float(codes: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.float32]:
    """µ-law codes -> float32 samples in [-1, 1) (int16 value / 32768)."""
    return _ULAW_DECODE_FLOAT[_as_codes(codes)]


def alaw_decode_float(codes: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.float32]:
    """A-law codes -> float32 samples in [-1, 1) (int16 value / 32768)."""
    return _ALAW_DECODE_FLOAT[_as_codes(codes)]
