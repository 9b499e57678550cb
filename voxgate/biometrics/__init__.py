"""Speaker biometrics: models, voiceprints, calibration profiles and scoring."""

from voxgate.biometrics.profile import (
    CalibrationProfile,
    Channel,
    ScoreResult,
    Thresholds,
    Verdict,
    resolve_profile,
)
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, combine

__all__ = [
    "CalibrationProfile",
    "Channel",
    "Embedding",
    "ScoreResult",
    "Thresholds",
    "Verdict",
    "Voiceprint",
    "combine",
    "resolve_profile",
]
