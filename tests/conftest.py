"""Shared fixtures: the real speech beside the repository and prepared models."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxgate.settings import Settings

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
LIBRI = SPEECH / "librispeech_test_other"


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.fail(
            f"real speech is missing: expected ../shared/data/speech beside the repository ({SPEECH})"
        )
    return SPEECH


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The prepared model directory (VOXGATE_MODEL_DIR or the default); prepared here if it is not yet."""
    from voxgate.audio.vad import install_vad_model
    from voxgate.biometrics.prepare.export import prepare_models

    directory = Settings().model_dir
    install_vad_model(directory)
    prepare_models(directory)
    return directory


def libri_files(speaker: str) -> list[Path]:
    return sorted((LIBRI / speaker).glob("*.flac"))
