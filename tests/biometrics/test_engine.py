"""The offline engine on real speech: net speech, the embedded cut, crops by net speech."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxgate.audio.decode import decode_file
from voxgate.audio.types import AudioLimits
from voxgate.biometrics.engine import Biometrics
from voxgate.errors import InsufficientSpeech
from voxgate.settings import Settings


@pytest.fixture(scope="module")
def biometrics(model_dir: Path) -> Biometrics:
    return Biometrics(model_dir, ("ecapa",))


def test_a_crop_holds_exactly_the_first_seconds_of_net_speech(biometrics: Biometrics, speech_dir: Path) -> None:
    path = next((speech_dir / "librispeech_test_other").rglob("*.flac"))
    analysis = biometrics.analyse(decode_file(path, limits=AudioLimits.from_settings(Settings())))
    assert analysis.speech_s > 6.0
    crop = analysis.first(4.5)
    assert crop.speech_s == pytest.approx(4.5, abs=1e-6)
    assert crop.speech.size < analysis.speech.size
    assert biometrics.voiceprint(analysis, min_speech_s=1.0, max_speech_s=4.5).speech_s == pytest.approx(4.5)
    assert analysis.first(1000.0) is analysis
    with pytest.raises(InsufficientSpeech):
        biometrics.voiceprint(analysis, min_speech_s=5.0, max_speech_s=4.5)


def test_telephone_clips_keep_their_speech(biometrics: Biometrics, speech_dir: Path) -> None:
    """An 8 kHz digit clip of ~3.3 s: VAD at 8 kHz finds most of it; the models get it with its context."""
    limits = AudioLimits.from_settings(Settings())
    for path in sorted((speech_dir / "fsdd_digits_3s_8k").rglob("*.flac"))[:5]:
        analysis = biometrics.analyse(decode_file(path, limits=limits))
        assert analysis.source_rate_hz == 8000
        assert analysis.speech_s > 1.5, path.name
        assert analysis.speech.size / 16000 >= analysis.speech_s  # the context is embedded too
