"""The simulated telephone channel: 8 kHz, only G.711 levels, and G.711's usual ~37 dB on speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from voxgate.audio import (
    alaw_decode_float,
    alaw_encode_float,
    resample,
    telephone_channel,
    ulaw_decode_float,
    ulaw_encode_float,
)

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
CODECS = {"ulaw": (ulaw_encode_float, ulaw_decode_float), "alaw": (alaw_encode_float, alaw_decode_float)}


def _speech(folder: str) -> tuple[NDArray[np.float32], int]:
    samples, rate_hz = sf.read(sorted((SPEECH / folder).glob("*/*.flac"))[0], dtype="float32")
    return samples, int(rate_hz)


def _snr_db(reference: NDArray[np.floating], test: NDArray[np.floating]) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - test) ** 2)))


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_wideband_speech_becomes_8khz_g711(law: str) -> None:
    speech, rate_hz = _speech("librispeech_test_other")
    out, out_rate_hz = telephone_channel(speech, rate_hz, law)  # type: ignore[arg-type]
    assert out_rate_hz == 8000
    assert out.dtype == np.float32
    assert abs(len(out) - len(speech) * 8000 / rate_hz) <= 1
    encode, decode = CODECS[law]
    assert np.array_equal(decode(encode(out)), out)  # every sample is a G.711 level
    # only quantisation noise on top of the band limit: measured 37.2 dB (µ-law), 37.5 dB (A-law)
    assert _snr_db(resample(speech, rate_hz, 8000), out) > 34


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_8khz_speech_is_not_resampled(law: str) -> None:
    speech, rate_hz = _speech("asterisk_ivr_voices_8k")
    assert rate_hz == 8000
    out, _ = telephone_channel(speech, rate_hz, law)  # type: ignore[arg-type]
    encode, decode = CODECS[law]
    assert np.array_equal(out, decode(encode(speech)))
    assert _snr_db(speech, out) > 34  # measured 37.3 dB (µ-law), 37.6 dB (A-law)


def test_unknown_law_is_refused() -> None:
    with pytest.raises(ValueError, match="law"):
        telephone_channel(np.zeros(100, dtype=np.float32), 8000, "gsm")  # type: ignore[arg-type]
