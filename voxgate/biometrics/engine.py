"""The offline engine: from decoded audio to net speech and a voiceprint.

Live streams (``streams/``) reuse the same pieces chunk by chunk; this module serves whole recordings
(CLI, ``POST /api/v2/import``, evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgate.audio.resample import resample
from voxgate.audio.types import Audio, FloatArray
from voxgate.audio.vad import (
    VAD_SAMPLE_RATE_HZ,
    SegmentationRules,
    SileroVad,
    SpeechSegment,
    net_speech_s,
    speech_only,
    speech_segments,
)
from voxgate.biometrics.models import load_model
from voxgate.biometrics.models.base import EmbeddingModel
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.errors import InsufficientSpeech

log = logging.getLogger(__name__)

MODEL_RATE_HZ = 16000


@dataclass(frozen=True)
class SpeechAnalysis:
    """What VAD found in a recording, with the speech itself ready for the models."""

    speech: FloatArray  # (samples,) speech only, pauses cut, at 16 kHz
    segments: tuple[SpeechSegment, ...]
    speech_s: float  # net speech, seconds (unpadded segments)
    duration_s: float
    source_rate_hz: int


class Biometrics:
    """VAD plus the embedding models a calibration profile needs, loaded once per process."""

    def __init__(
        self,
        model_dir: Path,
        model_ids: Sequence[str],
        *,
        threads: int = 1,
        rules: SegmentationRules | None = None,
        max_chunk_s: float = 60.0,
        int8: bool = False,
    ) -> None:
        """``int8`` loads the statically quantised copies of the models (``VOXGATE_INT8``)."""
        self.vad = SileroVad(model_dir, threads=threads)
        self.models: dict[str, EmbeddingModel] = {
            m: load_model(m, model_dir, threads=threads, int8=int8) for m in model_ids
        }
        self.rules = rules or SegmentationRules()
        self.max_chunk_s = max_chunk_s

    def analyse(self, audio: Audio) -> SpeechAnalysis:
        samples = resample(audio.samples, audio.sample_rate_hz, VAD_SAMPLE_RATE_HZ)
        segments = speech_segments(self.vad.probabilities(samples), self.rules)
        return SpeechAnalysis(
            speech=speech_only(samples, VAD_SAMPLE_RATE_HZ, segments, pad_s=self.rules.pad_s),
            segments=tuple(segments),
            speech_s=net_speech_s(segments),
            duration_s=audio.duration_s,
            source_rate_hz=audio.sample_rate_hz,
        )

    def voiceprint(
        self,
        analysis: SpeechAnalysis,
        *,
        min_speech_s: float,
        what: str = "this operation",
        max_speech_s: float | None = None,
    ) -> Voiceprint:
        """Embed the net speech with every loaded model; too little speech is an error, never a score."""
        if analysis.speech_s < min_speech_s or analysis.speech.size == 0:
            raise InsufficientSpeech(analysis.speech_s, min_speech_s, what)
        speech = analysis.speech
        speech_s = analysis.speech_s
        if max_speech_s is not None and speech_s > max_speech_s:
            speech = speech[: int(max_speech_s * MODEL_RATE_HZ)]
            speech_s = max_speech_s
        embeddings = {
            model_id: Embedding(model_id, model.version, self._embed(model, speech))
            for model_id, model in self.models.items()
        }
        return Voiceprint(embeddings, speech_s)

    def _embed(self, model: EmbeddingModel, speech: FloatArray) -> FloatArray:
        """Long speech is embedded in near-equal chunks and pooled by length, bounding memory."""
        chunk = int(self.max_chunk_s * MODEL_RATE_HZ)
        if speech.size <= chunk:
            return l2_normalise(model.embed(speech))
        n_chunks = -(-speech.size // chunk)
        pieces = np.array_split(speech, n_chunks)
        vectors = np.stack([l2_normalise(model.embed(piece)) for piece in pieces])  # (chunks, dimension)
        weights = np.array([piece.size for piece in pieces], dtype=np.float64)
        return l2_normalise((weights[:, None] * vectors).sum(axis=0).astype(np.float32))
