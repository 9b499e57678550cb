"""Sample-rate conversion with soxr: band-limited, phase-linear, and fast enough to run per stream."""

from __future__ import annotations

import numpy as np
import soxr
from numpy.typing import ArrayLike, NDArray


def resample(samples: ArrayLike, from_hz: int, to_hz: int) -> NDArray[np.float32]:
    """Mono float samples at ``from_hz`` -> float32 at ``to_hz`` (soxr "HQ"); equal rates return the input
    as float32 (no copy when it already is).

    For whole recordings: soxr flushes its filter tail at the end, so output length is
    ``round(len * to_hz / from_hz)``. Live streams need a stateful ``soxr.ResampleStream`` instead of
    calling this per chunk (per-chunk calls would click at every chunk edge).
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} Hz -> {to_hz} Hz")
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"resample takes mono (samples,) audio, got shape {array.shape}")
    if from_hz == to_hz or array.size == 0:
        return array
    out: NDArray[np.float32] = soxr.resample(array, from_hz, to_hz, quality="HQ")
    return out.astype(np.float32, copy=False)
