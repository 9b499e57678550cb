from __future__ import annotations

import numpy as np
import pytest

from voxgate.biometrics.voiceprint import Embedding, Voiceprint, combine, l2_normalise
from voxgate.errors import ModelMismatch


def _emb(values: list[float], model: str = "ecapa", version: str = "v1") -> Embedding:
    return Embedding(model, version, l2_normalise(np.array(values, dtype=np.float32)))


def test_combine_weights_by_net_speech() -> None:
    a = Voiceprint({"ecapa": _emb([1, 0])}, speech_s=30.0)
    b = Voiceprint({"ecapa": _emb([0, 1])}, speech_s=10.0)
    combined = combine([a, b])
    assert combined.speech_s == 40.0
    vector = combined.embeddings["ecapa"].vector
    assert vector[0] == pytest.approx(3 * vector[1], rel=1e-5)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_combining_different_models_is_an_error() -> None:
    a = Voiceprint({"ecapa": _emb([1, 0])}, 20.0)
    b = Voiceprint({"ecapa": _emb([1, 0], version="v2")}, 20.0)
    with pytest.raises(ModelMismatch, match="v1"):
        combine([a, b])
    with pytest.raises(ModelMismatch):
        combine([a, Voiceprint({"campplus": _emb([1, 0], "campplus")}, 20.0)])


def test_embedding_bytes_round_trip() -> None:
    e = _emb([0.3, -0.2, 0.9])
    back = Embedding.from_bytes(e.model_id, e.model_version, e.to_bytes())
    np.testing.assert_array_equal(back.vector, e.vector)
    with pytest.raises(ValueError, match="bytes"):
        Embedding.from_bytes("ecapa", "v1", b"abc")


def test_missing_model_is_named() -> None:
    v = Voiceprint({"ecapa": _emb([1, 0])}, 20.0)
    with pytest.raises(ModelMismatch, match="no campplus embedding"):
        v.embedding("campplus")
    with pytest.raises(ModelMismatch, match="expects v9"):
        v.embedding("ecapa", "v9")


def test_zero_vector_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="zero"):
        l2_normalise(np.zeros(4, dtype=np.float32))
