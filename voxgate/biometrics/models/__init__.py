"""The embedding models by id: load a prepared one, read the cards of what is prepared.

Preparing (exporting to ONNX with torch) lives in ``voxgate.biometrics.prepare``; nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from voxgate.biometrics.models.base import (
    INT8_FILE,
    MODEL_CARD,
    MODEL_FILE,
    EmbeddingModel,
    ModelCard,
    OnnxEmbeddingModel,
    read_card_file,
)
from voxgate.biometrics.models.campplus import CampplusModel
from voxgate.biometrics.models.ecapa import EcapaModel
from voxgate.errors import ModelError, ModelNotPrepared

__all__ = [
    "INT8_FILE",
    "MODEL_CARD",
    "MODEL_FILE",
    "MODEL_IDS",
    "EmbeddingModel",
    "ModelCard",
    "check_model_id",
    "list_cards",
    "load_model",
    "read_card",
]

MODEL_IDS: tuple[str, ...] = ("ecapa", "campplus")

_BACKENDS: dict[str, type[OnnxEmbeddingModel]] = {"ecapa": EcapaModel, "campplus": CampplusModel}


def check_model_id(model_id: str) -> str:
    """``model_id`` if it names a known model, else a ModelError listing the known ones."""
    if model_id not in _BACKENDS:
        raise ModelError(f"unknown model {model_id!r}; known models: {', '.join(MODEL_IDS)}")
    return model_id


def load_model(model_id: str, model_dir: Path, threads: int = 1, *, int8: bool = False) -> EmbeddingModel:
    """The prepared model ``model_dir/<model_id>``, its ONNX file checked against its card; with ``int8``
    its statically quantised copy (faster on CPU, same embedding space; see ``VOXGATE_INT8``).

    Raises ModelError for an unknown id and ModelNotPrepared (naming the missing or mismatching file)
    when the folder does not hold a prepared model.
    """
    backend = _BACKENDS[check_model_id(model_id)]
    folder = Path(model_dir) / model_id
    if not folder.is_dir():
        raise ModelNotPrepared(
            f"{folder / MODEL_FILE} is missing (no folder {folder}); run `voxgate models prepare`"
        )
    return backend.from_dir(folder, threads=threads, int8=int8)


def read_card(model_dir: Path, model_id: str) -> ModelCard:
    """The card of a prepared model (not checked against its ONNX file; ``load_model`` does that)."""
    check_model_id(model_id)
    return read_card_file(Path(model_dir) / model_id / MODEL_CARD)


def list_cards(model_dir: Path) -> list[ModelCard]:
    """Cards of the prepared models in ``model_dir``, in ``MODEL_IDS`` order; absent ones are skipped."""
    return [
        read_card(model_dir, model_id)
        for model_id in MODEL_IDS
        if (Path(model_dir) / model_id / MODEL_CARD).is_file()
    ]
