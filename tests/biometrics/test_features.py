"""NumPy features: shapes, normalisation, and agreement with the torch references in prepare/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.biometrics.features import (
    N_MELS,
    campplus_fbank,
    campplus_log_mel,
    campplus_num_frames,
    ecapa_fbank,
    ecapa_filterbank,
    ecapa_log_mel,
    ecapa_num_frames,
)
from voxgate.errors import InsufficientSpeech, MultiChannelAudio

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
LIBRI = SPEECH / "librispeech_test_other"


def _speech(name: str = "1688/1688-142285-0002.flac") -> np.ndarray:
    samples, rate_hz = sf.read(LIBRI / name, dtype="float32")
    assert rate_hz == 16000
    return np.asarray(samples, dtype=np.float32)


@pytest.mark.parametrize("num_samples", [1600, 16000, 16159, 16160, 45360])
def test_shapes_follow_each_framing(num_samples: int) -> None:
    waveform = _speech()[:num_samples]
    ecapa = ecapa_fbank(waveform)
    campplus = campplus_fbank(waveform)
    assert ecapa.dtype == np.float32 and campplus.dtype == np.float32
    assert ecapa.shape == (1 + num_samples // 160, N_MELS) == (ecapa_num_frames(num_samples), N_MELS)
    assert campplus.shape == (1 + (num_samples - 400) // 160, N_MELS)
    assert campplus.shape[0] == campplus_num_frames(num_samples)


def test_features_are_mean_normalised_per_utterance() -> None:
    waveform = _speech()
    for features in (ecapa_fbank(waveform), campplus_fbank(waveform)):
        np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)
        assert features.std(axis=0).min() > 0.5  # not flattened: only the mean is removed


def test_ecapa_log_mel_keeps_an_80_db_range_per_utterance() -> None:
    log_mel = ecapa_log_mel(_speech())
    assert log_mel.max() - log_mel.min() == pytest.approx(80.0, abs=1e-3)


def test_speechbrain_filters_use_the_left_width_on_both_sides() -> None:
    filters = ecapa_filterbank()  # (bins, mels)
    assert filters.shape == (201, N_MELS)
    mel_points = np.linspace(0.0, 2595.0 * np.log10(1.0 + 8000.0 / 700.0), N_MELS + 2)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    freqs_hz = np.linspace(0.0, 8000.0, 201)
    for m in range(N_MELS):
        centre_hz, left_width_hz = hz_points[m + 1], hz_points[m + 1] - hz_points[m]
        # a triangle symmetric in Hz whose right half is as wide as its left one (not as the next gap)
        expected = np.maximum(0.0, 1.0 - np.abs(freqs_hz - centre_hz) / left_width_hz)
        np.testing.assert_allclose(filters[:, m], expected, atol=1e-9)


def test_campplus_features_use_the_unscaled_waveform() -> None:
    waveform = _speech()
    # Kaldi's log floor (FLT_EPSILON) makes the scale matter: 3D-Speaker trained on floats in [-1, 1]
    assert np.abs(campplus_fbank(waveform * 32768.0) - campplus_fbank(waveform)).max() > 0.1


def test_too_short_and_multichannel_input_are_errors() -> None:
    with pytest.raises(InsufficientSpeech):
        campplus_fbank(np.zeros(399, dtype=np.float32))
    with pytest.raises(InsufficientSpeech):
        ecapa_fbank(np.zeros(0, dtype=np.float32))
    with pytest.raises(MultiChannelAudio):
        ecapa_fbank(np.zeros((1600, 2), dtype=np.float32))


@pytest.mark.parametrize("name", ["1688/1688-142285-0000.flac", "1998/1998-15444-0001.flac"])
def test_numpy_ecapa_fbank_matches_the_torch_speechbrain_reference(name: str) -> None:
    torch = pytest.importorskip("torch")
    from voxgate.biometrics.prepare.ecapa_torch import torch_ecapa_fbank

    waveform = _speech(name)
    reference = torch_ecapa_fbank(torch.from_numpy(waveform)).numpy()
    ours = ecapa_fbank(waveform)
    assert ours.shape == reference.shape
    # dB; torch runs in float32, the NumPy port in float64 (it agrees with float64 torch to 1e-5 dB)
    np.testing.assert_allclose(ours, reference, atol=5e-3)
    assert float(np.abs(ours - reference).mean()) < 1e-4


@pytest.mark.parametrize("name", ["1688/1688-142285-0000.flac", "1998/1998-15444-0001.flac"])
def test_kaldi_native_fbank_matches_the_torch_kaldi_reference(name: str) -> None:
    torch = pytest.importorskip("torch")
    from voxgate.biometrics.prepare.campplus_torch import torch_kaldi_fbank

    waveform = _speech(name)
    reference = torch_kaldi_fbank(torch.from_numpy(waveform)).numpy()
    ours = campplus_fbank(waveform)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-2)  # natural log; float32 FFTs on both sides
    assert float(np.abs(ours - reference).mean()) < 1e-4
    assert campplus_log_mel(waveform).shape == ours.shape
