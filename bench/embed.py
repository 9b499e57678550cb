"""Single-thread real-time factor of each speaker model (and the VAD) on 10 s of real speech.

    .venv/bin/python bench/embed.py [--repeats 7] [--int8]

Prints the median wall time over the repeats divided by the audio duration, and the peak resident memory
of this process. Pin it to one core for steadier figures: `taskset -c 1 .venv/bin/python bench/embed.py`.
``--int8`` also times each model's static int8 copy (``VOXGATE_INT8``), its runs interleaved with the fp32
ones so that both see the same machine, and prints the speed-up.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxgate.audio.vad import SileroVad
from voxgate.biometrics.features import campplus_fbank, ecapa_fbank
from voxgate.biometrics.models import MODEL_IDS, load_model
from voxgate.settings import Settings

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "librispeech_test_other"
CLIP_S = 10.0


def ten_seconds_of_speech() -> np.ndarray:
    pieces, total = [], 0
    for path in sorted(SPEECH.rglob("*.flac")):
        samples, rate = sf.read(path, dtype="float32")
        samples = soxr.resample(samples, rate, 16000).astype(np.float32) if rate != 16000 else samples
        pieces.append(samples)
        total += len(samples)
        if total >= CLIP_S * 16000:
            break
    return np.concatenate(pieces)[: int(CLIP_S * 16000)]


def median_rtf(run: Callable[[], object], repeats: int) -> float:
    return median_rtfs([run], repeats)[0]


def median_rtfs(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median real-time factor of each run, the runs interleaved (a noisy neighbour hits all alike)."""
    for run in runs:
        run()  # warm-up
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, measured in zip(runs, times, strict=True):
            started = time.perf_counter()
            run()
            measured.append(time.perf_counter() - started)
    return [statistics.median(measured) / CLIP_S for measured in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--int8", action="store_true", help="also time the static int8 copies")
    args = parser.parse_args()
    settings = Settings()
    clip = ten_seconds_of_speech()
    print(
        f"clip: {CLIP_S:.0f} s of real speech at 16 kHz; single onnxruntime thread; median of {args.repeats} runs"
    )
    print(f"{'stage':<22} {'RTF':>8} {'ms per 10 s':>12}")
    vad = SileroVad(settings.model_dir, threads=1)
    rtf = median_rtf(lambda: vad.probabilities(clip), args.repeats)
    print(f"{'silero VAD':<22} {rtf:>8.4f} {1000 * rtf * CLIP_S:>12.1f}")
    features = {"ecapa": ecapa_fbank, "campplus": campplus_fbank}
    for model_id in MODEL_IDS:
        models = [load_model(model_id, settings.model_dir, threads=1)]
        if args.int8:
            models.append(load_model(model_id, settings.model_dir, threads=1, int8=True))
        rtfs = median_rtfs([lambda m=m: m.embed(clip) for m in models], args.repeats)  # type: ignore[misc]
        feature_rtf = median_rtf(lambda f=features[model_id]: f(clip), args.repeats)  # type: ignore[misc]
        print(f"{model_id + ' (total)':<22} {rtfs[0]:>8.4f} {1000 * rtfs[0] * CLIP_S:>12.1f}")
        if args.int8:
            label = f"{model_id} int8 (total)"
            print(
                f"{label:<22} {rtfs[1]:>8.4f} {1000 * rtfs[1] * CLIP_S:>12.1f}   {rtfs[0] / rtfs[1]:.2f}x faster"
            )
        print(f"{'  of which features':<22} {feature_rtf:>8.4f} {1000 * feature_rtf * CLIP_S:>12.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
