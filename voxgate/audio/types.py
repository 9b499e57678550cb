"""The value types of ``voxgate.audio``: decoded audio and the limits a decode runs under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # only for the annotation: audio/ does not need pydantic at import time
    from voxgate.settings import Settings

# The array types of the whole package, defined once.
FloatArray = NDArray[np.float32]  # samples, features, embeddings
Float64Array = NDArray[np.float64]  # scores and the statistics computed from them


@dataclass(frozen=True, eq=False)
class Audio:
    """Mono audio as the engine consumes it, plus what the source was (for logs and channel choice).

    ``eq=False``: equality by identity, because element-wise array equality has no single truth value.
    """

    samples: FloatArray  # (samples,) mono in [-1, 1]
    sample_rate_hz: int
    channels_in_source: int
    codec: str  # "PCM_16", "ULAW", "GSM610", "VORBIS", "opus", "aac", ...
    container: str  # "WAV", "FLAC", "OGG", "MP3", "mov", "matroska", ...

    def __post_init__(self) -> None:
        # Cheap shape/type checks only (O(1)): a wrong dtype here would surface far away as a model error.
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise ValueError(
                f"Audio.samples must be a 1-D float32 array, got {self.samples.ndim}-D {self.samples.dtype}"
            )
        if self.sample_rate_hz <= 0:
            raise ValueError(f"Audio.sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.channels_in_source <= 0:
            raise ValueError(f"Audio.channels_in_source must be positive, got {self.channels_in_source}")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


@dataclass(frozen=True)
class AudioLimits:
    """What a single decode may cost: bytes in, seconds of audio out, sample-rate sanity, wall time."""

    max_bytes: int
    max_duration_s: float
    min_sample_rate_hz: int = 4000
    max_sample_rate_hz: int = 192000
    decode_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_duration_s <= 0 or self.decode_timeout_s <= 0:
            raise ValueError(f"audio limits must be positive: {self}")
        if not 0 < self.min_sample_rate_hz <= self.max_sample_rate_hz:
            raise ValueError(
                f"need 0 < min_sample_rate_hz <= max_sample_rate_hz, got "
                f"{self.min_sample_rate_hz}..{self.max_sample_rate_hz}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> AudioLimits:
        return cls(
            max_bytes=settings.max_audio_bytes,
            max_duration_s=settings.max_audio_duration_s,
            min_sample_rate_hz=settings.min_sample_rate_hz,
            max_sample_rate_hz=settings.max_sample_rate_hz,
            decode_timeout_s=settings.decode_timeout_s,
        )
