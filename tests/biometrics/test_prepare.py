"""``voxgate models prepare``: pinned sources, the ONNX export check, atomic and idempotent writes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soundfile as sf

from voxgate.biometrics.features import campplus_fbank
from voxgate.biometrics.models import INT8_FILE, MODEL_CARD, MODEL_FILE, ModelCard, load_model
from voxgate.biometrics.models.base import sha256_file
from voxgate.biometrics.prepare import export
from voxgate.biometrics.prepare.export import default_check_audio, prepare_models
from voxgate.errors import ModelError

if TYPE_CHECKING:  # importorskip's module is untyped: give mypy torch's own types
    import torch
else:
    torch = pytest.importorskip("torch")

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
LIBRI = SPEECH / "librispeech_test_other"
CHECK_AUDIO = [
    LIBRI / "1688" / "1688-142285-0002.flac",
    SPEECH / "fsdd_digits_3s_8k" / "george" / "george_seg000.flac",  # 8 kHz: resampled for the check
]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def exported_campplus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard]:
    """A real CAM++ export into a fresh directory (the smaller of the two models: ~20 s)."""
    model_dir = tmp_path_factory.mktemp("models")
    lines: list[str] = []
    (card,) = prepare_models(model_dir, ["campplus"], check_audio=CHECK_AUDIO, log=lines.append)
    assert any("cosine" in line for line in lines)
    return model_dir, card


def test_real_export_passes_the_check(exported_campplus: tuple[Path, ModelCard]) -> None:
    model_dir, card = exported_campplus
    assert card.export_cosine >= 0.9999
    assert card.check_files == len(CHECK_AUDIO)
    assert card.source_sha256 == export.CAMPPLUS_CHECKPOINT_SHA256
    files = sorted(p.name for p in (model_dir / "campplus").iterdir())
    assert files == sorted(
        [MODEL_CARD, MODEL_FILE, INT8_FILE]
    )  # the int8 copy, calibrated on the check audio
    assert card.int8_sha256 == sha256_file(model_dir / "campplus" / INT8_FILE)
    assert _hidden_entries(model_dir) == []  # no staging folder left behind
    assert (model_dir / "campplus").stat().st_mode & 0o755 == 0o755  # readable by a server user
    assert load_model("campplus", model_dir).card == card


def test_prepare_is_idempotent(exported_campplus: tuple[Path, ModelCard]) -> None:
    model_dir, card = exported_campplus
    onnx_path = model_dir / "campplus" / MODEL_FILE
    mtime_ns = onnx_path.stat().st_mtime_ns
    lines: list[str] = []
    assert prepare_models(model_dir, ["campplus"], check_audio=CHECK_AUDIO, log=lines.append) == [card]
    assert onnx_path.stat().st_mtime_ns == mtime_ns
    assert any("up to date" in line for line in lines)


def test_a_tampered_export_is_not_up_to_date(exported_campplus: tuple[Path, ModelCard]) -> None:
    model_dir, _ = exported_campplus
    source = export.SOURCES["campplus"]
    assert export._current_card(model_dir / "campplus", source) is not None
    stale = dataclasses.replace(source, sha256="0" * 64)  # as if the pin had moved on
    assert export._current_card(model_dir / "campplus", stale) is None


def test_ecapa_onnx_matches_torch_on_real_speech(model_dir: Path) -> None:
    from voxgate.biometrics.prepare.ecapa_torch import build_ecapa, torch_ecapa_fbank

    network = build_ecapa(export.verified_checkpoint(export.SOURCES["ecapa"]))  # strict load
    speech, _ = sf.read(LIBRI / "1998" / "1998-15444-0001.flac", dtype="float32")
    with torch.no_grad():
        reference = network(torch_ecapa_fbank(torch.from_numpy(speech)).unsqueeze(0))[0].numpy()
    served = load_model("ecapa", model_dir).embed(speech)
    assert _cosine(reference, served) >= 0.9999


def test_campplus_head_is_3d_speakers_without_the_final_relu() -> None:
    from voxgate.biometrics.prepare.campplus_torch import build_campplus

    source = export.SOURCES["campplus"]
    module_path = export.package_dir(source) / export.CAMPPLUS_MODULE
    checkpoint = export.verified_checkpoint(source)
    speech, _ = sf.read(LIBRI / "1688" / "1688-142285-0002.flac", dtype="float32")
    features = torch.from_numpy(campplus_fbank(speech)).unsqueeze(0)
    with torch.no_grad():
        ours = build_campplus(module_path, checkpoint)(features)[0].numpy()
        senkos = build_campplus(module_path, checkpoint, final_relu=True)(features)[0].numpy()
    assert (ours < 0).sum() > 20  # the BatchNorm output keeps its sign
    np.testing.assert_allclose(senkos, np.maximum(ours, 0.0), atol=1e-6)


class _TinyNetwork(torch.nn.Module):
    """features (batch, frames, 80) -> (batch, 192): exports in a blink, exercises the whole pipeline."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(80, 192)

    def forward(self, features: Any) -> Any:
        return torch.relu(self.linear(features)).mean(dim=1)


def _tiny_build(*, flip_mels: bool) -> Callable[[Any, Path], tuple[Any, Callable[[Any], Any]]]:
    """The tiny network, with torch features equal to the served ones or with the mel axis reversed."""

    def torch_features(waveform: Any) -> Any:
        features = torch.from_numpy(campplus_fbank(waveform.numpy()))  # (frames, mels)
        return features.flip(dims=[1]) if flip_mels else features

    return lambda source, checkpoint: (_TinyNetwork().eval(), torch_features)


def test_force_re_exports_and_a_failed_check_leaves_the_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "_build_torch", _tiny_build(flip_mels=False))
    (first,) = prepare_models(tmp_path, ["campplus"], check_audio=CHECK_AUDIO[:1])
    assert first.export_cosine >= 0.9999
    (again,) = prepare_models(tmp_path, ["campplus"], check_audio=CHECK_AUDIO[:1], force=True)
    assert again.onnx_sha256 == sha256_file(tmp_path / "campplus" / MODEL_FILE)

    monkeypatch.setattr(export, "_build_torch", _tiny_build(flip_mels=True))  # torch now disagrees with ONNX
    with pytest.raises(ModelError, match="does not match torch"):
        prepare_models(tmp_path, ["campplus"], check_audio=CHECK_AUDIO[:1], force=True)
    assert _hidden_entries(tmp_path) == []
    assert load_model("campplus", tmp_path).card == again  # the previous export is untouched

    (tmp_path / "campplus" / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="does not match torch"):  # no longer up to date: exports, fails
        prepare_models(tmp_path, ["campplus"], check_audio=CHECK_AUDIO[:1])


def test_checkpoint_with_the_wrong_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = export.SOURCES["campplus"]
    monkeypatch.setitem(export.SOURCES, "campplus", dataclasses.replace(source, sha256="0" * 64))
    with pytest.raises(ModelError, match=f"sha256 {source.sha256}, expected {'0' * 64}"):
        prepare_models(tmp_path, ["campplus"], check_audio=CHECK_AUDIO)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="known models: ecapa, campplus"):
        prepare_models(tmp_path, ["ecapa", "xvector"])


def test_default_check_audio_takes_a_few_files_per_set(tmp_path: Path) -> None:
    files = default_check_audio()
    assert len(files) == 2 * len([p for p in SPEECH.iterdir() if p.is_dir()])
    assert all(p.is_file() and SPEECH in p.parents for p in files)
    with pytest.raises(ModelError, match="--check-audio"):
        default_check_audio(tmp_path / "missing")
