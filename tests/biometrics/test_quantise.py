"""The static int8 copies of the speaker models: written by prepare, checked on load, close to fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from voxgate.audio.vad import install_vad_model
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.models import INT8_FILE, MODEL_CARD, MODEL_IDS, load_model, read_card
from voxgate.biometrics.models.base import cosine, sha256_file
from voxgate.biometrics.prepare import export
from voxgate.biometrics.prepare.export import load_check_clip, prepare_models
from voxgate.errors import ModelNotPrepared

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
# Not among the calibration files (the first two of each set): other speakers, both rates.
HELD_OUT = [
    SPEECH / "librispeech_test_other" / "1998" / "1998-15444-0005.flac",
    SPEECH / "librispeech_test_other" / "2033" / "2033-164914-0003.flac",
    SPEECH / "asterisk_ivr_voices_8k" / "june_wallack__fr-CA" / "check-number-dial-again.flac",
    SPEECH / "fsdd_digits_3s_8k" / "yweweler" / "yweweler_seg002.flac",
]
# Measured on these four files: ECAPA 0.994-0.996, CAM++ 0.985-0.990. Over all 1,785 recordings of the
# speech sets (docs/accuracy.md) the median is 0.993 / 0.989, the 1st percentile 0.978 / 0.963.
MIN_AGREEMENT = 0.97


def _held_out() -> list[np.ndarray]:
    missing = [p for p in HELD_OUT if not p.is_file()]
    assert not missing, f"real speech missing: {missing}"
    return [load_check_clip(p) for p in HELD_OUT]


def _without_int8(card_path: Path) -> None:
    """The card as an older voxgate wrote it (no int8 fields)."""
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({k: v for k, v in card.items() if not k.startswith("int8")}))


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_prepare_wrote_an_int8_copy_that_loads(model_dir: Path, model_id: str) -> None:
    card = read_card(model_dir, model_id)
    assert card.int8_sha256 == sha256_file(model_dir / model_id / INT8_FILE)
    assert "quantize_static QDQ" in card.int8_recipe
    assert card.int8_cosine >= 0.97
    model = load_model(model_id, model_dir, int8=True)
    assert model.int8 and model.version == card.version  # same embedding space, same voiceprints
    assert not load_model(model_id, model_dir).int8


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_int8_embeddings_agree_with_fp32_on_real_speech(model_dir: Path, model_id: str) -> None:
    fp32 = load_model(model_id, model_dir)
    int8 = load_model(model_id, model_dir, int8=True)
    agreement = [cosine(fp32.embed(clip), int8.embed(clip)) for clip in _held_out()]
    assert min(agreement) >= MIN_AGREEMENT, agreement


def test_biometrics_loads_the_int8_models_on_request(model_dir: Path) -> None:
    assert all(m.int8 for m in Biometrics(model_dir, MODEL_IDS, int8=True).models.values())
    assert not any(m.int8 for m in Biometrics(model_dir, MODEL_IDS).models.values())


@pytest.fixture()
def campplus_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A model directory holding the VAD and a writable copy of the prepared CAM++ (the smaller model)."""
    install_vad_model(tmp_path)
    shutil.copytree(model_dir / "campplus", tmp_path / "campplus")
    return tmp_path


def test_a_missing_int8_copy_is_a_clear_error_and_fp32_still_loads(campplus_copy: Path) -> None:
    (campplus_copy / "campplus" / INT8_FILE).unlink()
    _without_int8(campplus_copy / "campplus" / MODEL_CARD)  # an older card loads as before
    with pytest.raises(ModelNotPrepared, match=r"model\.int8\.onnx is missing.*voxgate models prepare"):
        load_model("campplus", campplus_copy, int8=True)
    assert not load_model("campplus", campplus_copy).int8


def test_a_tampered_int8_copy_is_refused(campplus_copy: Path) -> None:
    path = campplus_copy / "campplus" / INT8_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelNotPrepared, match="does not match its card"):
        load_model("campplus", campplus_copy, int8=True)


def test_prepare_adds_the_int8_copy_to_a_prepared_model_once(
    campplus_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = campplus_copy / "campplus"
    (folder / INT8_FILE).unlink()
    _without_int8(folder / MODEL_CARD)
    onnx_mtime = (folder / "model.onnx").stat().st_mtime_ns

    # no speech to calibrate on: fp32 stays prepared, int8 is logged as unavailable
    monkeypatch.setattr(export, "default_speech_dir", lambda: campplus_copy / "no-speech-here")
    lines: list[str] = []
    (card,) = prepare_models(campplus_copy, ["campplus"], log=lines.append)
    assert card.int8_sha256 == "" and not (folder / INT8_FILE).exists()
    assert any("int8 copy unavailable" in line for line in lines), lines

    lines.clear()
    (card,) = prepare_models(campplus_copy, ["campplus"], check_audio=HELD_OUT[2:], log=lines.append)
    assert (
        card.int8_sha256
        == sha256_file(folder / INT8_FILE)
        == read_card(campplus_copy, "campplus").int8_sha256
    )
    assert (folder / "model.onnx").stat().st_mtime_ns == onnx_mtime  # fp32 was not exported again
    assert load_model("campplus", campplus_copy, int8=True).int8

    int8_mtime = (folder / INT8_FILE).stat().st_mtime_ns
    lines.clear()
    assert prepare_models(campplus_copy, ["campplus"], check_audio=HELD_OUT[2:], log=lines.append) == [card]
    assert (folder / INT8_FILE).stat().st_mtime_ns == int8_mtime
    assert any("up to date" in line and "int8" in line for line in lines), lines
