"""How long does each stage of an import hold the GIL, i.e. keep the event loop and the engine's thread waiting?

Each stage of decoding and embedding one 25 s recording (LibriSpeech test-other, 16 kHz FLAC) runs in a loop
on a second thread while this thread sleeps 1 ms at a time and records how late it wakes: waking needs the
GIL, so a late wake is a wait for the GIL (or for a core, on a busy machine; the line "alone" shows that
floor). The process may use both cores. The switch interval is 1 ms, as in ``voxgate serve``.

    .venv/bin/python bench/offline_gil.py
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from voxgate.audio import AudioLimits, decode_bytes, resample
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.features import campplus_fbank, ecapa_fbank
from voxgate.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech" / "librispeech_test_other" / "1688"
RECORDING_S = 25.0
LATE_S = 0.0005


def recording() -> bytes:
    pieces = [sf.read(path, dtype="float32")[0] for path in sorted(SPEECH.glob("*.flac"))[:3]]
    audio = np.concatenate(pieces)[: int(RECORDING_S * 16000)]
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


def wake_lateness(duration_s: float) -> list[float]:
    late = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        started = time.perf_counter()
        time.sleep(0.001)
        late.append(time.perf_counter() - started - 0.001)
    return late


def summary(late: list[float]) -> str:
    share = sum(x > LATE_S for x in late) / len(late)
    return f"{share:.0%} | {np.percentile(late, 99) * 1e3:.2f} | {max(late) * 1e3:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="probe time per stage")
    args = parser.parse_args()
    sys.setswitchinterval(0.001)
    settings = Settings()
    biometrics = Biometrics(settings.model_dir, ["ecapa", "campplus"], int8=settings.int8)
    data = recording()
    limits = AudioLimits.from_settings(settings)
    audio = decode_bytes(data, limits=limits, filename="recording.flac")
    narrowband = resample(audio.samples, audio.sample_rate_hz, 8000)
    speech = biometrics.analyse(audio).speech

    def whole_job() -> object:
        analysis = biometrics.analyse(decode_bytes(data, limits=limits, filename="recording.flac"))
        return biometrics.voiceprint(analysis, min_speech_s=1.0)

    stages: dict[str, Callable[[], object]] = {
        "decode FLAC (soundfile)": lambda: decode_bytes(data, limits=limits, filename="recording.flac"),
        "resample 8 -> 16 kHz (soxr)": lambda: resample(narrowband, 8000, 16000),
        "VAD, window by window (onnxruntime)": lambda: biometrics.vad.probabilities(audio.samples),
        "ECAPA fbank (numpy)": lambda: ecapa_fbank(speech),
        "CAM++ fbank (kaldi-native-fbank)": lambda: campplus_fbank(speech),
        "ECAPA embed (fbank + onnxruntime)": lambda: biometrics.models["ecapa"].embed(speech),
        "CAM++ embed (fbank + onnxruntime)": lambda: biometrics.models["campplus"].embed(speech),
        "the whole import job": whole_job,
    }
    print(f"recording {audio.duration_s:.1f} s, net speech {speech.size / 16000:.1f} s")
    print(f"| stage | CPU per call ms | wakes late > {LATE_S * 1e3:g} ms | late p99 ms | late max ms |")
    print("|---|---|---|---|---|")
    print(f"| alone (nothing else runs) | | {summary(wake_lateness(args.seconds))} |", flush=True)
    for name, stage in stages.items():
        stage()
        cpu = time.thread_time()
        stage()
        cpu = time.thread_time() - cpu
        stop = threading.Event()

        def loop(stage: Callable[[], object] = stage, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                stage()

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.05)
        late = wake_lateness(args.seconds)
        stop.set()
        thread.join()
        print(f"| {name} | {cpu * 1e3:.1f} | {summary(late)} |", flush=True)


if __name__ == "__main__":
    main()
