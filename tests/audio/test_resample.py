"""soxr resampling: lengths, tones, aliasing, real speech, and the no-op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from voxgate.audio import resample

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"


def _tone(frequency_hz: float, rate_hz: int, duration_s: float = 1.0) -> NDArray[np.float64]:
    return 0.5 * np.sin(2 * np.pi * frequency_hz * np.arange(int(rate_hz * duration_s)) / rate_hz)


def _snr_db(reference: NDArray[np.floating], test: NDArray[np.floating]) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - test) ** 2)))


def test_equal_rates_are_a_no_op() -> None:
    samples = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert resample(samples, 16000, 16000) is samples
    assert resample(samples.astype(np.float64), 8000, 8000).dtype == np.float32


@pytest.mark.parametrize(
    ("from_hz", "to_hz"), [(16000, 8000), (8000, 16000), (44100, 16000), (48000, 8000), (22050, 16000)]
)
def test_output_length_and_dtype(from_hz: int, to_hz: int) -> None:
    out = resample(np.zeros(12345, dtype=np.float32), from_hz, to_hz)
    assert out.dtype == np.float32
    assert abs(len(out) - 12345 * to_hz / from_hz) <= 1


def test_a_tone_in_band_survives() -> None:
    out = resample(_tone(1000, 16000).astype(np.float32), 16000, 8000)
    expected = _tone(1000, 8000)
    # measured 137 dB away from the edges (float32 rounding)
    assert _snr_db(expected[200:-200], out[200:-200]) > 100


def test_a_tone_above_the_new_nyquist_is_removed_not_aliased() -> None:
    tone_6khz = _tone(6000, 16000).astype(np.float32)  # would alias to 2 kHz at 8 kHz without filtering
    out = resample(tone_6khz, 16000, 8000)
    residual_db = 20 * np.log10(np.sqrt(np.mean(out[200:-200] ** 2)) / np.sqrt(np.mean(tone_6khz**2)))
    assert residual_db < -90  # measured -150 dB


def test_real_speech_round_trip_keeps_the_passband() -> None:
    """16 kHz speech -> 48 kHz -> 16 kHz: below 7 kHz the spectrum is kept (the last few hundred Hz
    under Nyquist fall in the anti-aliasing transition band, so the broadband SNR is only ~28 dB)."""
    path = sorted((SPEECH / "librispeech_test_other").glob("*/*.flac"))[0]
    speech, rate_hz = sf.read(path, dtype="float32")
    assert rate_hz == 16000
    back = resample(resample(speech, 16000, 48000), 48000, 16000)
    assert len(back) == len(speech)
    spectrum, spectrum_back = np.fft.rfft(speech), np.fft.rfft(back)
    passband = np.fft.rfftfreq(len(speech), 1 / 16000) < 7000
    kept, lost = spectrum[passband], spectrum[passband] - spectrum_back[passband]
    passband_snr_db = 10 * np.log10(np.sum(np.abs(kept) ** 2) / np.sum(np.abs(lost) ** 2))
    assert passband_snr_db > 55, passband_snr_db  # measured 64 dB


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10, dtype=np.float32), 0, 8000)
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((10, 2), dtype=np.float32), 16000, 8000)
    assert resample(np.zeros(0, dtype=np.float32), 16000, 8000).size == 0
