"""Voice activity detection with Silero VAD (ONNX, from the ``silero-vad`` wheel).

Net speech is what biometrics cares about: long silences are never embedded. The model runs on 32 ms
windows with a recurrent state, so the same class serves whole recordings (one pass) and live streams
(``VadState`` carried between calls, several streams in one batch).

Telephone audio is analysed at its own 8 kHz (Silero's 256-sample windows), not upsampled: on the
telephone sets, upsampling to 16 kHz first made Silero miss much of the speech (FSDD digits: mean net
speech 1.97 s of ~3.3 s clips, 26 % of clips under 1 s; at 8 kHz: 2.78 s and 4 %). Each stream's level
is normalised before the model sees it (:class:`VadState` tracks its peak; raised by at most +26 dB), as quiet
callers were missed (with it: 0.8 % of the FSDD clips under 1 s). Measured by ``bench/short_speech.py``
and the investigation in docs/accuracy.md.
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

VAD_SAMPLE_RATE_HZ = 16000  # wideband audio (and the models' rate)
TELEPHONE_VAD_RATE_HZ = 8000  # audio that arrived at 8 kHz or less is analysed at 8 kHz
WINDOW_SAMPLES = 512  # 32 ms at 16 kHz, the model's fixed window
CONTEXT_SAMPLES = 64  # the model expects the previous window's last 64 samples (at 16 kHz) in front
WINDOW_S = WINDOW_SAMPLES / VAD_SAMPLE_RATE_HZ  # 32 ms at either rate
# Level normalisation in front of the model: the running peak is brought to LEVEL_TARGET (quiet audio
# raised by at most LEVEL_MAX_GAIN, loud audio lowered). Causal (the gain of a window depends only on the audio so far), so a live
# stream and the offline pass over the same audio see the same input.
LEVEL_TARGET = 0.5
LEVEL_MAX_GAIN = 20.0  # +26 dB
LEVEL_FLOOR = LEVEL_TARGET / LEVEL_MAX_GAIN


def vad_rate_for(sample_rate_hz: int) -> int:
    """The rate VAD runs at for audio that arrived at ``sample_rate_hz``."""
    return TELEPHONE_VAD_RATE_HZ if sample_rate_hz <= TELEPHONE_VAD_RATE_HZ else VAD_SAMPLE_RATE_HZ


def window_samples(vad_rate_hz: int) -> int:
    """Samples of one 32 ms VAD window at ``vad_rate_hz`` (8 or 16 kHz)."""
    if vad_rate_hz not in (TELEPHONE_VAD_RATE_HZ, VAD_SAMPLE_RATE_HZ):
        raise ValueError(f"Silero VAD runs at 8 or 16 kHz, not {vad_rate_hz} Hz")
    return WINDOW_SAMPLES * vad_rate_hz // VAD_SAMPLE_RATE_HZ

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
    """The recurrent state of one audio stream between calls, and the peak level heard so far."""

    rate_hz: int = VAD_SAMPLE_RATE_HZ
    rnn: FloatArray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: FloatArray = field(init=False)
    peak: float = LEVEL_FLOOR

    def __post_init__(self) -> None:
        self.context = np.zeros(CONTEXT_SAMPLES * self.rate_hz // VAD_SAMPLE_RATE_HZ, dtype=np.float32)

    def gain(self, window: FloatArray) -> float:
        """This window's gain: the running peak (this window included) brought to LEVEL_TARGET."""
        self.peak = max(self.peak, float(np.max(np.abs(window))) if window.size else 0.0)
        return LEVEL_TARGET / self.peak


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
        self._sr8k = np.array(TELEPHONE_VAD_RATE_HZ, dtype=np.int64)

    def step(self, windows: FloatArray, states: list[VadState]) -> FloatArray:
        """Advance several streams by one window each; returns their speech probabilities (batch,).

        The streams of one call share a rate: 512-sample windows at 16 kHz or 256 at 8 kHz."""
        # windows: (batch, 512) at 16 kHz or (batch, 256) at 8 kHz
        batch, width = windows.shape
        rate = VAD_SAMPLE_RATE_HZ if width == WINDOW_SAMPLES else TELEPHONE_VAD_RATE_HZ
        if width != window_samples(rate) or any(state.rate_hz != rate for state in states):
            raise ValueError(f"{width}-sample windows do not match the streams' VAD rates")
        gains = np.array([state.gain(window) for state, window in zip(states, windows, strict=True)])
        contexts = np.stack([state.context for state in states])  # (batch, 64 or 32)
        rnn = np.concatenate([state.rnn for state in states], axis=1)  # (2, batch, 128)
        scaled = windows * gains[:, None].astype(np.float32)
        inputs = np.concatenate([contexts, scaled], axis=1).astype(np.float32, copy=False)
        sr = self._sr if rate == VAD_SAMPLE_RATE_HZ else self._sr8k
        probs, new_rnn = self._session.run(None, {"input": inputs, "state": rnn, "sr": sr})
        for i, state in enumerate(states):
            state.rnn = np.ascontiguousarray(new_rnn[:, i : i + 1, :])
            state.context = inputs[i, -contexts.shape[1] :].copy()
        return np.asarray(probs, dtype=np.float32).reshape(batch)

    def probabilities(
        self, samples: FloatArray, state: VadState | None = None, sample_rate_hz: int = VAD_SAMPLE_RATE_HZ
    ) -> FloatArray:
        """Speech probability of every whole 32 ms window of 16 (or 8) kHz audio (a trailing part is
        zero-padded)."""
        state = state or VadState(sample_rate_hz)
        width = window_samples(sample_rate_hz)
        n_windows = -(-len(samples) // width)
        padded = np.zeros(n_windows * width, dtype=np.float32)
        padded[: len(samples)] = samples
        frames = padded.reshape(n_windows, width)  # (windows, 512 or 256)
        out = np.empty(n_windows, dtype=np.float32)
        for i in range(n_windows):
            out[i] = self.step(frames[i : i + 1], [state])[0]
        return out


@dataclass(frozen=True)
class SegmentationRules:
    """How window probabilities become speech segments (Silero's own defaults), and how much of the
    audio around them is embedded.

    The models get the speech with its natural context: each segment padded by ``pad_s``, and pauses
    shorter than ``keep_pause_s`` kept, so only long silences are cut. Measured on the 3 s clip sets
    (``bench/short_speech.py``, naive fusion EER): a tight cut (30 ms padding, every pause cut) lost
    against embedding the whole clip (arabic_commands_3s wideband 6.55 % vs 5.48 %); with context it is
    5.55 %.
    """

    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.10
    pad_s: float = 0.2
    keep_pause_s: float = 1.0


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
    samples: FloatArray,
    sample_rate_hz: int,
    segments: list[SpeechSegment],
    pad_s: float = 0.03,
    keep_pause_s: float = 0.0,
) -> FloatArray:
    """The speech of a recording with long pauses cut out: segments less than ``keep_pause_s`` apart are
    joined (the pause kept), then each is padded by ``pad_s``; overlaps merge."""
    if not segments:
        return np.zeros(0, dtype=np.float32)
    spans: list[tuple[float, float]] = []
    for segment in segments:
        if spans and segment.start_s - spans[-1][1] < keep_pause_s:
            spans[-1] = (spans[-1][0], segment.end_s)
        else:
            spans.append((segment.start_s, segment.end_s))
    keep = np.zeros(len(samples), dtype=bool)
    for start_s, end_s in spans:
        a = max(0, int((start_s - pad_s) * sample_rate_hz))
        b = min(len(samples), int(np.ceil((end_s + pad_s) * sample_rate_hz)))
        keep[a:b] = True
    return np.ascontiguousarray(samples[keep], dtype=np.float32)
