"""Raw PCM frames: signed 16-bit little-endian bytes as they arrive from streams, and the float <-> int16
scaling every part of voxgate shares (full scale 32768, like libsndfile, so a decoded WAV and a raw stream
of the same bytes give identical floats). Multi-channel audio is interleaved (one frame = one sample of
each channel); voxgate analyses one speaker, so one channel, named by whoever sends it (:func:`pick_channel`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voxgate.errors import CorruptAudio, MultiChannelAudio

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


def pick_channel(channels: int, channel: int | None, name: str) -> int:
    """The channel to analyse of audio with ``channels`` channels: ``channel`` if it exists; the only one of
    mono audio. Several channels and none named is refused: which one is the customer is the sender's to
    say, never guessed (mixing them down would score two speakers as one)."""
    if channels < 1:
        raise CorruptAudio(f"{name}: the header declares {channels} channels")
    if channel is None:
        if channels == 1:
            return 0
        raise MultiChannelAudio(
            f"{name} has {channels} channels; one speaker is analysed: name the channel to use "
            f"(0..{channels - 1})"
        )
    if not 0 <= channel < channels:
        raise MultiChannelAudio(
            f"{name} has {channels} channel{'s' if channels > 1 else ''}; channel {channel} does not exist "
            f"(valid: 0..{channels - 1})"
        )
    return channel


class FrameBuffer:
    """Turns byte chunks of any size (network reads split samples anywhere) into whole s16le frames, and
    those into the float32 samples of one channel (``channel`` of ``channels`` interleaved; mono by default).

    The bytes of a frame not yet complete are kept for the next chunk instead of being dropped or
    misaligning every later sample.
    """

    def __init__(self, channels: int = 1, channel: int = 0) -> None:
        if not 0 <= channel < channels:
            raise ValueError(f"channel {channel} of {channels} does not exist")
        self.channels = channels
        self.channel = channel
        self._frame_bytes = 2 * channels
        self._carry = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes held back until the rest of their frame arrives (less than one frame)."""
        return len(self._carry)

    def push(self, chunk: bytes | bytearray | memoryview) -> NDArray[np.float32]:
        """Add a chunk; return the float32 samples (of the chosen channel) it completes (possibly none)."""
        data = self._carry + bytes(chunk) if self._carry else bytes(chunk)
        whole_bytes = len(data) - len(data) % self._frame_bytes
        self._carry = data[whole_bytes:]
        samples = pcm16_from_bytes(memoryview(data)[:whole_bytes])
        if self.channels == 1:
            return samples
        return np.ascontiguousarray(samples.reshape(-1, self.channels)[:, self.channel])  # (frames,)

    def close(self) -> None:
        """End of stream: held-back bytes mean the stream stopped mid-frame."""
        if self._carry:
            left = len(self._carry)
            self._carry = b""
            unit = "16-bit sample" if self.channels == 1 else f"frame of {self.channels} 16-bit samples"
            plural = "s" if left > 1 else ""
            raise CorruptAudio(
                f"the PCM stream ended in the middle of a {unit} ({left} byte{plural} left over)"
            )
