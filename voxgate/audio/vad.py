"""Voice activity detection with Silero VAD (ONNX, from the ``silero-vad`` wheel).

Net speech is what biometrics cares about: silence and noise are never embedded. The model runs on
32 ms windows at 16 kHz with a recurrent state, so the same class serves whole recordings (one pass)
and live streams (``VadState`` carried between calls, several streams in one batch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voxgate.audio.types import FloatArray
from voxgate.errors import ModelError, ModelNotPrepared

VAD_SAMPLE_RATE_HZ = 16000
WINDOW_SAMPLES = 512  # 32 ms at 16 kHz, the model's fixed window
CONTEXT_SAMPLES = 64  # the model expects the previous window's last 64 samples in front
WINDOW_S = WINDOW_SAMPLES / VAD_SAMPLE_RATE_HZ

VAD_WHEEL = "silero-vad==6.2.3"
VAD_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
VAD_FOLDER = "silero_vad"
VAD_FILE = "silero_vad.onnx"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def install_vad_model(model_dir: Path) -> Path:
    """Copy the Silero ONNX file from the installed wheel into the model directory (idempotent).

    The wheel is located without importing it: ``import silero_vad`` pulls in torch.
    """
    target = model_dir / VAD_FOLDER / VAD_FILE
    if target.exists() and _sha256(target) == VAD_SHA256:
        return target
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the {VAD_WHEEL} wheel is not installed (pip install --no-deps {VAD_WHEEL})")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / VAD_FILE
    if not source.exists():
        raise ModelError(f"{source} is missing from the {VAD_WHEEL} wheel")
    actual = _sha256(source)
    if actual != VAD_SHA256:
        raise ModelError(f"{source}: sha256 {actual} is not the pinned {VAD_SHA256} ({VAD_WHEEL})")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


@dataclass
class VadState:
    """The recurrent state of one audio stream between calls."""

    rnn: FloatArray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: FloatArray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, dtype=np.float32))


@dataclass(frozen=True)
class SpeechSegment:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class SileroVad:
    """Speech probabilities per 32 ms window, for one stream or a batch of streams."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        path = model_dir / VAD_FOLDER / VAD_FILE
        if not path.exists():
            raise ModelNotPrepared(f"VAD model {path} is missing: run `voxgate models prepare`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(VAD_SAMPLE_RATE_HZ, dtype=np.int64)

    def step(self, windows: FloatArray, states: list[VadState]) -> FloatArray:
        """Advance several streams by one window each; returns their speech probabilities (batch,)."""
        # windows: (batch, 512) at 16 kHz
        batch = windows.shape[0]
        contexts = np.stack([state.context for state in states])  # (batch, 64)
        rnn = np.concatenate([state.rnn for state in states], axis=1)  # (2, batch, 128)
        inputs = np.concatenate([contexts, windows], axis=1).astype(np.float32, copy=False)
        probs, new_rnn = self._session.run(None, {"input": inputs, "state": rnn, "sr": self._sr})
        for i, state in enumerate(states):
            state.rnn = np.ascontiguousarray(new_rnn[:, i : i + 1, :])
            state.context = inputs[i, -CONTEXT_SAMPLES:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(batch)

    def probabilities(self, samples: FloatArray, state: VadState | None = None) -> FloatArray:
        """Speech probability of every whole 32 ms window of 16 kHz audio (a trailing part is zero-padded)."""
        state = state or VadState()
        n_windows = -(-len(samples) // WINDOW_SAMPLES)
        padded = np.zeros(n_windows * WINDOW_SAMPLES, dtype=np.float32)
        padded[: len(samples)] = samples
        frames = padded.reshape(n_windows, WINDOW_SAMPLES)  # (windows, 512)
        out = np.empty(n_windows, dtype=np.float32)
        for i in range(n_windows):
            out[i] = self.step(frames[i : i + 1], [state])[0]
        return out


@dataclass(frozen=True)
class SegmentationRules:
    """How window probabilities become speech segments (Silero's own defaults)."""

    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.10
    pad_s: float = 0.03


def speech_segments(probs: FloatArray, rules: SegmentationRules | None = None) -> list[SpeechSegment]:
    """Hysteresis over window probabilities: speech starts at ``threshold`` and ends after ``min_silence_s``
    below ``threshold - 0.15``; segments shorter than ``min_speech_s`` are dropped. Unpadded."""
    rules = rules or SegmentationRules()
    low = max(rules.threshold - 0.15, 0.01)
    segments: list[SpeechSegment] = []
    start: int | None = None
    silence_from: int | None = None
    min_silence = max(1, round(rules.min_silence_s / WINDOW_S))
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= rules.threshold:
                start, silence_from = i, None
            continue
        if p >= rules.threshold:
            silence_from = None
        elif p < low:
            if silence_from is None:
                silence_from = i
            elif i - silence_from + 1 >= min_silence:
                segments.append(SpeechSegment(start * WINDOW_S, silence_from * WINDOW_S))
                start, silence_from = None, None
    if start is not None:
        end = silence_from if silence_from is not None else len(probs)
        segments.append(SpeechSegment(start * WINDOW_S, end * WINDOW_S))
    return [s for s in segments if s.duration_s >= rules.min_speech_s]


def net_speech_s(segments: list[SpeechSegment]) -> float:
    return float(sum(s.duration_s for s in segments))


def speech_only(
    samples: FloatArray, sample_rate_hz: int, segments: list[SpeechSegment], pad_s: float = 0.03
) -> FloatArray:
    """The speech of a recording with pauses cut out (each segment padded by ``pad_s``, overlaps merged)."""
    if not segments:
        return np.zeros(0, dtype=np.float32)
    keep = np.zeros(len(samples), dtype=bool)
    for segment in segments:
        a = max(0, int((segment.start_s - pad_s) * sample_rate_hz))
        b = min(len(samples), int(np.ceil((segment.end_s + pad_s) * sample_rate_hz)))
        keep[a:b] = True
    return np.ascontiguousarray(samples[keep], dtype=np.float32)
