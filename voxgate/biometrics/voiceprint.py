"""Voiceprints: the speaker embeddings of one customer, one per model, with the net speech behind them."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from voxgate.audio.types import FloatArray
from voxgate.errors import ModelMismatch


def l2_normalise(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot normalise a zero or non-finite embedding")
    return (vector / norm).astype(np.float32)


@dataclass(frozen=True)
class Embedding:
    """One model's unit-length embedding; model id and version travel with the vector."""

    model_id: str
    model_version: str
    vector: FloatArray  # (dimension,) float32, unit length

    @property
    def dimension(self) -> int:
        return int(self.vector.shape[0])

    def check_comparable(self, other: Embedding) -> None:
        if (self.model_id, self.model_version) != (other.model_id, other.model_version):
            raise ModelMismatch(
                f"cannot compare a {self.model_id} ({self.model_version}) embedding with a "
                f"{other.model_id} ({other.model_version}) one"
            )
        if self.dimension != other.dimension:
            raise ModelMismatch(f"embedding dimensions differ: {self.dimension} vs {other.dimension}")

    def to_bytes(self) -> bytes:
        return self.vector.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, model_id: str, model_version: str, blob: bytes) -> Embedding:
        if len(blob) == 0 or len(blob) % 4:
            raise ValueError(f"a float32 vector blob cannot be {len(blob)} bytes long")
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return cls(model_id, model_version, l2_normalise(vector))

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")


@dataclass(frozen=True)
class Voiceprint:
    """A speaker's embeddings by model id, and the net speech (seconds) they were computed from."""

    embeddings: Mapping[str, Embedding]
    speech_s: float

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.embeddings))

    def embedding(self, model_id: str, model_version: str | None = None) -> Embedding:
        found = self.embeddings.get(model_id)
        if found is None:
            raise ModelMismatch(
                f"this voiceprint has no {model_id} embedding (it has: {', '.join(self.model_ids) or 'none'}); "
                "re-enroll with the current profile's models"
            )
        if model_version is not None and found.model_version != model_version:
            raise ModelMismatch(
                f"this voiceprint's {model_id} embedding is from {found.model_version}, "
                f"the profile expects {model_version}"
            )
        return found


def combine(voiceprints: Sequence[Voiceprint]) -> Voiceprint:
    """One voiceprint from several recordings: each model's embeddings averaged, weighted by net speech."""
    if not voiceprints:
        raise ValueError("combine needs at least one voiceprint")
    model_ids = set(voiceprints[0].embeddings)
    for other in voiceprints[1:]:
        if set(other.embeddings) != model_ids:
            raise ModelMismatch("the recordings' voiceprints were made with different models")
    total_s = float(sum(v.speech_s for v in voiceprints))
    combined: dict[str, Embedding] = {}
    for model_id in sorted(model_ids):
        first = voiceprints[0].embeddings[model_id]
        for other in voiceprints[1:]:
            first.check_comparable(other.embeddings[model_id])
        weights = np.array([v.speech_s for v in voiceprints], dtype=np.float64)
        if total_s <= 0:
            weights = np.ones_like(weights)
        stacked = np.stack([v.embeddings[model_id].vector for v in voiceprints])  # (recordings, dimension)
        mean = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
        combined[model_id] = Embedding(model_id, first.model_version, l2_normalise(mean.astype(np.float32)))
    return Voiceprint(combined, total_s)
