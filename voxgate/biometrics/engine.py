"""The offline engine: from decoded audio to net speech and a voiceprint.

Live streams (``streams/``) reuse the same pieces chunk by chunk; this module serves whole recordings
(CLI, ``POST /api/v2/import``, evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from voxgate.audio.resample import resample
from voxgate.audio.types import Audio, FloatArray
from voxgate.audio.vad import (
    SegmentationRules,
    SileroVad,
    SpeechSegment,
    net_speech_s,
    speech_only,
    speech_segments,
    vad_rate_for,
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

    samples: FloatArray  # (samples,) the whole recording at 16 kHz
    segments: tuple[SpeechSegment, ...]
    speech_s: float  # net speech, seconds (unpadded segments)
    duration_s: float
    source_rate_hz: int
    rules: SegmentationRules

    @property
    def speech(self) -> FloatArray:
        """What the models embed: the speech with its context (padding, short pauses), long pauses cut."""
        return speech_only(
            self.samples,
            MODEL_RATE_HZ,
            list(self.segments),
            pad_s=self.rules.pad_s,
            keep_pause_s=self.rules.keep_pause_s,
        )

    def first(self, speech_s: float) -> SpeechAnalysis:
        """The recording up to where its first ``speech_s`` seconds of net speech end."""
        if speech_s >= self.speech_s:
            return self
        kept: list[SpeechSegment] = []
        left = speech_s
        for segment in self.segments:
            if left <= 0:
                break
            end = min(segment.end_s, segment.start_s + left)
            kept.append(SpeechSegment(segment.start_s, end))
            left -= end - segment.start_s
        cut = int(np.ceil((kept[-1].end_s + self.rules.pad_s) * MODEL_RATE_HZ)) if kept else 0
        return replace(self, samples=self.samples[:cut], segments=tuple(kept), speech_s=net_speech_s(kept))


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
        """``int8`` loads the statically quantised copies of the models (``VOXGATE_INT8``).

        NumPy's BLAS gets ``threads`` threads too, like onnxruntime's intra-op pool. Left alone, OpenBLAS
        starts one thread per core that spins between the small matrix products of feature extraction:
        measured, a live stream then cost 47 CPU ms per second instead of 38, and two workers on two cores
        fought over both (bench/README.md, "Scaling across workers"). The limit is process-wide, which is
        what a serving process or an evaluation worker wants.
        """
        threadpool_limits(limits=threads, user_api="blas")
        self.vad = SileroVad(model_dir, threads=threads)
        self.models: dict[str, EmbeddingModel] = {
            m: load_model(m, model_dir, threads=threads, int8=int8) for m in model_ids
        }
        self.rules = rules or SegmentationRules()
        self.max_chunk_s = max_chunk_s

    def analyse(self, audio: Audio) -> SpeechAnalysis:
        """VAD at 8 kHz for telephone-rate audio, else at 16 kHz; the models get 16 kHz either way."""
        vad_rate = vad_rate_for(audio.sample_rate_hz)
        vad_samples = resample(audio.samples, audio.sample_rate_hz, vad_rate)
        probabilities = self.vad.probabilities(vad_samples, sample_rate_hz=vad_rate)
        # the last window is zero-padded: speech found there ends with the recording
        segments = [
            SpeechSegment(s.start_s, min(s.end_s, audio.duration_s))
            for s in speech_segments(probabilities, self.rules)
        ]
        samples = (
            vad_samples
            if vad_rate == MODEL_RATE_HZ
            else resample(audio.samples, audio.sample_rate_hz, MODEL_RATE_HZ)
        )
        return SpeechAnalysis(
            samples=samples,
            segments=tuple(segments),
            speech_s=net_speech_s(segments),
            duration_s=audio.duration_s,
            source_rate_hz=audio.sample_rate_hz,
            rules=self.rules,
        )

    def voiceprint(
        self,
        analysis: SpeechAnalysis,
        *,
        min_speech_s: float,
        what: str = "this operation",
        max_speech_s: float | None = None,
    ) -> Voiceprint:
        """Embed the speech with every loaded model; too little speech is an error, never a score.

        ``max_speech_s`` embeds only the recording's first that many seconds of net speech."""
        if max_speech_s is not None:
            analysis = analysis.first(max_speech_s)
        speech = analysis.speech
        speech_s = analysis.speech_s
        if speech_s < min_speech_s or speech.size == 0:
            raise InsufficientSpeech(speech_s, min_speech_s, what)
        embeddings = {
            model_id: Embedding(model_id, model.version, self.embed(model, speech))
            for model_id, model in self.models.items()
        }
        return Voiceprint(embeddings, speech_s)

    def embed(self, model: EmbeddingModel, speech: FloatArray) -> FloatArray:
        """Long speech is embedded in near-equal chunks and pooled by length, bounding memory."""
        chunk = int(self.max_chunk_s * MODEL_RATE_HZ)
        if speech.size <= chunk:
            return l2_normalise(model.embed(speech))
        n_chunks = -(-speech.size // chunk)
        pieces = np.array_split(speech, n_chunks)
        vectors = np.stack([l2_normalise(model.embed(piece)) for piece in pieces])  # (chunks, dimension)
        weights = np.array([piece.size for piece in pieces], dtype=np.float64)
        return l2_normalise((weights[:, None] * vectors).sum(axis=0).astype(np.float32))
