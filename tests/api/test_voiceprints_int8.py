"""``VOXGATE_INT8`` switches the served engine to the int8 models, or says clearly why it cannot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voxgate.audio.vad import install_vad_model
from voxgate.biometrics.models import INT8_FILE, MODEL_IDS
from voxgate.errors import ModelNotPrepared
from voxgate.service.models import load_biometrics
from voxgate.settings import Settings


def test_the_setting_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXGATE_INT8", raising=False)
    assert Settings(_env_file=None).int8 is False  # type: ignore[call-arg]
    monkeypatch.setenv("VOXGATE_INT8", "true")
    assert Settings(_env_file=None).int8 is True  # type: ignore[call-arg]


def test_the_setting_switches_the_served_models(model_dir: Path) -> None:
    served = load_biometrics(Settings(model_dir=model_dir, models="ecapa,campplus", int8=True))
    assert set(served.models) == set(MODEL_IDS)
    assert all(model.int8 for model in served.models.values())
    fp32 = load_biometrics(Settings(model_dir=model_dir, models="ecapa,campplus"))
    assert not any(model.int8 for model in fp32.models.values())


def test_a_missing_int8_copy_stops_the_engine_with_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    install_vad_model(tmp_path / "models")
    shutil.copytree(model_dir / "campplus", tmp_path / "models" / "campplus")
    (tmp_path / "models" / "campplus" / INT8_FILE).unlink()
    settings = Settings(model_dir=tmp_path / "models", models="campplus", int8=True)
    with pytest.raises(ModelNotPrepared, match=r"int8 copy \(VOXGATE_INT8\).*voxgate models prepare"):
        load_biometrics(settings)
