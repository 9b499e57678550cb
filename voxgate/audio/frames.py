"""Raw PCM frames: signed 16-bit little-endian bytes as they arrive from streams, and the float <-> int16
scaling every part of voxgate shares (full scale 32768, like libsndfile, so a decoded WAV and a raw stream
of the same bytes give identical floats)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voxgate.errors import CorruptAudio

PCM16_FULL_SCALE = 32768.0
_PCM16_LE = np.dtype("<i2")


def pcm16_to_float(pcm16: NDArray[np.int16]) -> NDArray[np.float32]:
    """int16 samples -> float32 in [-1, 1)."""
    return (np.asarray(pcm16, dtype=np.float32) / np.float32(PCM16_FULL_SCALE)).astype(np.float32, copy=False)


def float_to_pcm16(samples: ArrayLike) -> NDArray[np.int16]:
    """float samples in [-1, 1] -> int16, rounded to nearest and clipped (never wrapped) at full scale."""
    array = np.asarray(samples, dtype=np.float64)
    if array.size and not (np.isfinite(array.max()) and np.isfinite(array.min())):
        raise ValueError("samples contain NaN or infinity; they have no 16-bit value")
    scaled = np.rint(array * PCM16_FULL_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def pcm16_from_bytes(data: bytes | bytearray | memoryview) -> NDArray[np.float32]:
    """Raw s16le mono bytes -> float32 samples; an odd byte count is half a sample, so CorruptAudio."""
    if len(data) % 2:
        raise CorruptAudio(f"raw 16-bit PCM needs an even number of bytes, got {len(data)} (half a sample)")
    return pcm16_to_float(np.frombuffer(data, dtype=_PCM16_LE).astype(np.int16, copy=False))


class FrameBuffer:
    """Turns byte chunks of any size (network reads split samples anywhere) into whole s16le samples.

    An odd trailing byte is kept for the next chunk instead of being dropped or misaligning every later
    sample.
    """

    def __init__(self) -> None:
        self._carry = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes held back until the rest of their sample arrives (0 or 1)."""
        return len(self._carry)

    def push(self, chunk: bytes | bytearray | memoryview) -> NDArray[np.float32]:
        """Add a chunk; return the float32 samples it completes (possibly none)."""
        data = self._carry + bytes(chunk) if self._carry else bytes(chunk)
        whole_bytes = len(data) - len(data) % 2
        self._carry = data[whole_bytes:]
        return pcm16_from_bytes(memoryview(data)[:whole_bytes])

    def close(self) -> None:
        """End of stream: a held-back byte means the stream stopped mid-sample."""
        if self._carry:
            self._carry = b""
            raise CorruptAudio("the PCM stream ended in the middle of a 16-bit sample (1 byte left over)")
