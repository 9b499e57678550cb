"""Which part of a short recording should be embedded? Measures the cuts issue 11 asks about.

For every recording of the 3 s clip sets (and LibriSpeech, to check long speech does not suffer), on the
wideband channel and the telephone one (native 8 kHz or simulated G.711 µ-law), it embeds several cuts of
the same audio with ECAPA and CAM++ and reports the EER of each model's cosine and of their naive fusion
(the mean of the two cosines), every pair of recordings of one set a trial, no trial left out:

- ``whole``: the whole clip, no VAD (the issue's baseline);
- ``tight``: the speech only, pauses cut, 30 ms padding (the engine before issue 11);
- ``context``: pauses up to ``--gap`` s kept, longer ones cut; 200 ms padding (the engine since);
- ``fallback<S>``: ``context``, but the whole clip when VAD found less than S seconds of speech;

each with Silero's threshold 0.5 and a lower one (``--low-threshold``), and the net speech VAD finds. VAD
runs on 16 kHz audio here (upsampled for the 8 kHz sets), as the engine did before issue 11; this is the
measurement that made the engine run VAD at 8 kHz on telephone audio (bench/README.md).

    python bench/short_speech.py --jobs 2
    python bench/short_speech.py --vad-only   # how much speech VAD finds on telephone audio, four ways
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from voxgate.audio.channel import telephone_channel
from voxgate.audio.decode import decode_file
from voxgate.audio.resample import resample
from voxgate.audio.types import AudioLimits, FloatArray
from voxgate.audio.vad import (
    VAD_SAMPLE_RATE_HZ,
    SegmentationRules,
    SileroVad,
    VadState,
    net_speech_s,
    speech_segments,
)
from voxgate.biometrics.metrics import eer
from voxgate.biometrics.models import load_model
from voxgate.biometrics.voiceprint import l2_normalise
from voxgate.evaluation.datasets import read_dataset
from voxgate.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SETS = ("arabic_commands_3s", "fsdd_digits_3s_8k", "librispeech_test_other")
MODELS = ("ecapa", "campplus")
Cut = Callable[[FloatArray, list[tuple[float, float]]], FloatArray]


def _keep(samples: FloatArray, spans: list[tuple[float, float]]) -> FloatArray:
    keep = np.zeros(samples.size, dtype=bool)
    for start, end in spans:
        keep[max(0, int(start * VAD_SAMPLE_RATE_HZ)) : min(samples.size, int(np.ceil(end * VAD_SAMPLE_RATE_HZ)))] = True
    return np.ascontiguousarray(samples[keep])


def _merged(segments: list[tuple[float, float]], pad_s: float, gap_s: float) -> list[tuple[float, float]]:
    """Segments padded by ``pad_s``, joined across pauses shorter than ``gap_s``."""
    out: list[tuple[float, float]] = []
    for start, end in segments:
        if out and start - out[-1][1] < gap_s:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return [(s - pad_s, e + pad_s) for s, e in out]


def cuts(gap_s: float) -> dict[str, Cut]:
    return {
        "tight": lambda x, seg: _keep(x, _merged(seg, 0.03, 0.0)),
        "context": lambda x, seg: _keep(x, _merged(seg, 0.2, gap_s)),
    }


FALLBACK_S = (0.5, 1.0)  # the `context` cut, but the whole recording when VAD found less net speech


_state: dict[str, object] = {}


def _init(model_dir: Path) -> None:
    _state["vad"] = SileroVad(model_dir)
    _state["models"] = {m: load_model(m, model_dir) for m in MODELS}
    _state["limits"] = AudioLimits.from_settings(Settings())


def _embed_file(task: tuple[Path, bool, float, float]) -> dict[str, object]:
    path, telephone, low_threshold, gap_s = task
    vad: SileroVad = _state["vad"]  # type: ignore[assignment]
    models = _state["models"]
    audio = decode_file(path, limits=_state["limits"])  # type: ignore[arg-type]
    samples, rate = audio.samples, audio.sample_rate_hz
    if telephone and rate > 8000:
        samples, rate = telephone_channel(samples, rate)
    x = resample(samples, rate, VAD_SAMPLE_RATE_HZ)
    probs = vad.probabilities(x)
    out: dict[str, object] = {"rate": rate}
    out["whole"] = {m: l2_normalise(model.embed(x)) for m, model in models.items()}  # type: ignore[attr-defined]
    for threshold in (0.5, low_threshold):
        if threshold == low_threshold and threshold == 0.5:
            continue
        segments = speech_segments(probs, SegmentationRules(threshold=threshold))
        out[f"speech@{threshold}"] = net_speech_s(segments)
        spans = [(s.start_s, s.end_s) for s in segments]
        for name, cut in cuts(gap_s).items():
            piece = cut(x, spans) if spans else np.zeros(0, dtype=np.float32)
            key = f"{name}@{threshold}"
            out[key] = (
                {m: l2_normalise(model.embed(piece)) for m, model in models.items()}  # type: ignore[attr-defined]
                if piece.size >= 8000
                else None
            )
        for fallback in FALLBACK_S:
            use_whole = out[f"speech@{threshold}"] < fallback or out[f"context@{threshold}"] is None  # type: ignore[operator]
            out[f"fallback{fallback:g}@{threshold}"] = out["whole"] if use_whole else out[f"context@{threshold}"]
    return out


class _Unlevelled(VadState):
    """VAD without the level normalisation (as before issue 11)."""

    def gain(self, window: FloatArray) -> float:
        return 1.0


def vad_only(speech: Path, sets: list[str]) -> None:
    """Net speech per clip on the telephone channel: VAD on 16 kHz (upsampled) or 8 kHz audio, with and
    without the level normalisation; the share of clips under 0.5, 1.0 and 1.5 s."""
    vad = SileroVad(Settings().model_dir)
    limits = AudioLimits.from_settings(Settings())
    print("| set (telephone) | VAD | mean net speech s | < 0.5 s | < 1.0 s | < 1.5 s |")
    print("|---|---|---|---|---|---|")
    for name in sets:
        found: dict[str, list[float]] = {}
        for path in read_dataset(speech / name).files:
            audio = decode_file(path, limits=limits)
            x, rate = audio.samples, audio.sample_rate_hz
            if rate > 8000:
                x, rate = telephone_channel(x, rate)
            wide = resample(x, rate, VAD_SAMPLE_RATE_HZ)
            for label, samples, vad_rate, state in (
                ("16 kHz (upsampled), no level", wide, 16000, _Unlevelled(16000)),
                ("16 kHz (upsampled), level", wide, 16000, VadState(16000)),
                ("8 kHz, no level", x, 8000, _Unlevelled(8000)),
                ("8 kHz, level (the engine)", x, 8000, VadState(8000)),
            ):
                probs = vad.probabilities(samples, state, sample_rate_hz=vad_rate)
                found.setdefault(label, []).append(net_speech_s(speech_segments(probs)))
        for label, values in found.items():
            v = np.array(values)
            print(
                f"| {name} | {label} | {v.mean():.2f} | {np.mean(v < 0.5):.1%} | {np.mean(v < 1.0):.1%} | "
                f"{np.mean(v < 1.5):.1%} |",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "data" / "speech")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--low-threshold", type=float, default=0.35)
    parser.add_argument("--gap", type=float, default=1.0, help="longest pause kept by the `context` cut, s")
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--vad-only", action="store_true", help="only how much speech VAD finds")
    args = parser.parse_args()
    if args.vad_only:
        vad_only(args.speech, [s for s in args.sets if s != "librispeech_test_other"])
        return 0
    settings = Settings()
    print("| set | channel | cut | VAD threshold | mean net speech s | no embedding | ECAPA EER % | CAM++ EER % | naive fusion EER % |")
    print("|---|---|---|---|---|---|---|---|---|")
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(settings.model_dir,)) as pool:
        for name in args.sets:
            dataset = read_dataset(args.speech / name)
            speakers = np.array(dataset.speakers)
            wideband = decode_file(dataset.files[0], limits=AudioLimits.from_settings(settings)).sample_rate_hz >= 16000
            for telephone in (False, True) if wideband else (True,):
                started = time.monotonic()
                tasks = [(p, telephone, args.low_threshold, args.gap) for p in dataset.files]
                results = list(pool.map(_embed_file, tasks, chunksize=8))
                channel = "telephone" if telephone else "wideband"
                i, j = np.triu_indices(len(results), k=1)
                target = speakers[i] == speakers[j]
                names = [*cuts(args.gap), *(f"fallback{f:g}" for f in FALLBACK_S)]
                keys = ["whole"] + [f"{c}@{t}" for t in dict.fromkeys((0.5, args.low_threshold)) for c in names]
                for key in keys:
                    threshold = key.split("@")[1] if "@" in key else "–"
                    speech = (
                        np.mean([float(r[f"speech@{threshold}"]) for r in results])  # type: ignore[arg-type]
                        if threshold != "–"
                        else float("nan")
                    )
                    missing = sum(r[key] is None for r in results)
                    if key == "whole":
                        for t in dict.fromkeys((0.5, args.low_threshold)):
                            found = np.array([float(r[f"speech@{t}"]) for r in results])  # type: ignore[arg-type]
                            print(
                                f"<!-- {name} {channel} VAD {t}: net speech < 0.5 s {np.mean(found < 0.5):.1%}, "
                                f"< 1.0 s {np.mean(found < 1.0):.1%}, < 1.5 s {np.mean(found < 1.5):.1%} -->"
                            )
                    cos = {}
                    for m in MODELS:
                        dim = next(r[key][m].size for r in results if r[key] is not None)  # type: ignore[index]
                        zero = np.zeros(dim, np.float32)  # no embedding: a cosine of 0, the trial still counts
                        vecs = np.stack([r[key][m] if r[key] is not None else zero for r in results])  # type: ignore[index]
                        cos[m] = np.einsum("ij,ij->i", vecs[i], vecs[j])
                    fused = (cos["ecapa"] + cos["campplus"]) / 2
                    cells = [eer(c[target], c[~target]) for c in (cos["ecapa"], cos["campplus"], fused)]
                    print(
                        f"| {name} | {channel} | {key.split('@')[0]} | {threshold} | {speech:.2f} | {missing} | "
                        + " | ".join(f"{100 * c:.2f}" for c in cells)
                        + " |",
                        flush=True,
                    )
                print(f"{name} {channel}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
