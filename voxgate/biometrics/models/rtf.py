"""Real-time factor of an embedding model: how much of a core one second of audio costs."""

from __future__ import annotations

import statistics
import time

from voxgate.audio.types import FloatArray
from voxgate.biometrics.models.base import EmbeddingModel


def measure_rtf(model: EmbeddingModel, waveform: FloatArray, repeats: int = 5) -> float:
    """Median wall time of ``model.embed(waveform)`` (features included) divided by the audio duration.

    One warm-up call is not counted. The figure is single-threaded when the model was loaded with
    ``threads=1`` (the default), which is how workers run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    duration_s = int(waveform.shape[0]) / model.sample_rate_hz
    if duration_s <= 0:
        raise ValueError("cannot measure the real-time factor of an empty waveform")
    model.embed(waveform)  # warm-up: first-run allocations and kernel selection
    times_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.embed(waveform)
        times_s.append(time.perf_counter() - start)
    return float(statistics.median(times_s)) / duration_s
