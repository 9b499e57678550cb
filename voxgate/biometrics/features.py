"""Serving-time feature extraction in NumPy (no torch): what each embedding network was trained on.

* ECAPA (SpeechBrain 1.1.2): ``Fbank(n_mels=80)`` -- centred STFT (n_fft 400, hop 160, periodic Hamming,
  zero padding), power spectrum, SpeechBrain's own triangular filterbank (0-8 kHz), dB with a per-utterance
  80 dB floor -- then sentence-level mean normalisation (no variance normalisation).
* CAM++ (3D-Speaker): Kaldi fbank (80 bins, 25/10 ms, povey window, dither 0, snip_edges) on the float
  waveform in [-1, 1], minus the per-utterance mean.

``prepare/`` holds torch re-implementations of both that follow the training code line by line; the
export check runs the exported network on these NumPy features and torch on those, so a drift here fails
``voxgate models prepare``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt

from voxgate.audio.types import Float64Array, FloatArray
from voxgate.errors import InsufficientSpeech, MultiChannelAudio

SAMPLE_RATE_HZ = 16000
N_MELS = 80

# SpeechBrain Fbank / STFT defaults (speechbrain/lobes/features.py, processing/features.py)
ECAPA_N_FFT = 400
ECAPA_WIN_LENGTH = 400  # 25 ms
ECAPA_HOP_LENGTH = 160  # 10 ms
ECAPA_F_MIN_HZ = 0.0
ECAPA_F_MAX_HZ = SAMPLE_RATE_HZ / 2
ECAPA_AMIN = 1e-10
ECAPA_TOP_DB = 80.0

# Kaldi frame layout used by CAM++ (snip_edges: only whole 25 ms windows)
CAMPPLUS_FRAME_LENGTH = 400
CAMPPLUS_FRAME_SHIFT = 160


def ecapa_num_frames(num_samples: int) -> int:
    """Frames of the centred STFT: one per hop, plus one."""
    return 1 + num_samples // ECAPA_HOP_LENGTH


def campplus_num_frames(num_samples: int) -> int:
    """Frames of Kaldi's snip_edges framing (0 when shorter than one window)."""
    if num_samples < CAMPPLUS_FRAME_LENGTH:
        return 0
    return 1 + (num_samples - CAMPPLUS_FRAME_LENGTH) // CAMPPLUS_FRAME_SHIFT


def _mono_float32(waveform: npt.ArrayLike) -> FloatArray:
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise MultiChannelAudio(f"expected mono samples (n,), got an array of shape {samples.shape}")
    return samples


def _require_samples(samples: FloatArray, min_samples: int) -> None:
    if samples.shape[0] < min_samples:
        raise InsufficientSpeech(
            samples.shape[0] / SAMPLE_RATE_HZ, min_samples / SAMPLE_RATE_HZ, "feature extraction"
        )


@lru_cache(maxsize=1)
def _ecapa_window() -> Float64Array:
    """torch.hamming_window(400) (periodic=True): the denominator is N, not N - 1."""
    n = np.arange(ECAPA_WIN_LENGTH, dtype=np.float64)
    window: Float64Array = 0.54 - 0.46 * np.cos(2.0 * math.pi * n / ECAPA_WIN_LENGTH)
    return window


@lru_cache(maxsize=1)
def ecapa_filterbank() -> Float64Array:
    """SpeechBrain's triangular mel filters, (n_fft // 2 + 1, n_mels).

    Its quirk is kept: each triangle's half-width is the distance to the *left* neighbour, used on both
    sides, so the filters are symmetric in Hz (not in mel) and slightly narrower on the right.
    """

    def to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mel = np.linspace(to_mel(ECAPA_F_MIN_HZ), to_mel(ECAPA_F_MAX_HZ), N_MELS + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    band = (hz[1:] - hz[:-1])[:-1]  # (mels,) left-side widths
    f_central = hz[1:-1]  # (mels,)
    all_freqs = np.linspace(0.0, SAMPLE_RATE_HZ // 2, ECAPA_N_FFT // 2 + 1)  # (bins,)
    slope = (all_freqs[None, :] - f_central[:, None]) / band[:, None]  # (mels, bins)
    filters: Float64Array = np.maximum(0.0, np.minimum(slope + 1.0, 1.0 - slope)).T  # (bins, mels)
    return filters


def ecapa_log_mel(waveform: npt.ArrayLike) -> FloatArray:
    """SpeechBrain 1.1.2 ``Fbank(n_mels=80)`` of one utterance, (frames, 80) in dB, before normalisation."""
    samples = _mono_float32(waveform)
    _require_samples(samples, 1)
    padded = np.pad(samples.astype(np.float64), ECAPA_N_FFT // 2)  # center=True, pad_mode="constant"
    frames = np.lib.stride_tricks.sliding_window_view(padded, ECAPA_WIN_LENGTH)[::ECAPA_HOP_LENGTH]
    spectrum = np.fft.rfft(frames * _ecapa_window(), n=ECAPA_N_FFT)  # (frames, bins)
    power = spectrum.real**2 + spectrum.imag**2
    mel_power = power @ ecapa_filterbank()  # (frames, mels)
    log_mel = 10.0 * np.log10(np.maximum(mel_power, ECAPA_AMIN))  # ref_value 1.0 -> no offset
    log_mel = np.maximum(log_mel, log_mel.max() - ECAPA_TOP_DB)  # per-utterance floor
    result: FloatArray = log_mel.astype(np.float32)
    return result


def ecapa_fbank(waveform: npt.ArrayLike) -> FloatArray:
    """ECAPA input features, (frames, 80): the log-mel fbank minus its mean over time."""
    log_mel = ecapa_log_mel(waveform).astype(np.float64)
    normalised: FloatArray = (log_mel - log_mel.mean(axis=0, keepdims=True)).astype(np.float32)
    return normalised


def _kaldi_options() -> knf.FbankOptions:
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = float(SAMPLE_RATE_HZ)
    options.frame_opts.frame_length_ms = 1000.0 * CAMPPLUS_FRAME_LENGTH / SAMPLE_RATE_HZ
    options.frame_opts.frame_shift_ms = 1000.0 * CAMPPLUS_FRAME_SHIFT / SAMPLE_RATE_HZ
    options.frame_opts.dither = 0.0
    options.frame_opts.window_type = "povey"
    options.frame_opts.snip_edges = True
    options.frame_opts.preemph_coeff = 0.97
    options.frame_opts.remove_dc_offset = True
    options.mel_opts.num_bins = N_MELS
    options.mel_opts.low_freq = 20.0
    options.mel_opts.high_freq = 0.0  # 0 = Nyquist
    options.use_energy = False
    options.use_log_fbank = True
    options.use_power = True
    return options


def campplus_log_mel(waveform: npt.ArrayLike) -> FloatArray:
    """Kaldi log-mel fbank of one utterance, (frames, 80), before mean normalisation.

    Samples stay in [-1, 1], as 3D-Speaker feeds torchaudio's float waveform to ``kaldi.fbank`` (no
    32768 scaling): a scale factor moves the signal against Kaldi's log floor (FLT_EPSILON) and changes
    the near-empty bins (e.g. below 100 Hz in band-limited speech), not only a constant the mean removes.
    """
    samples = _mono_float32(waveform)
    _require_samples(samples, CAMPPLUS_FRAME_LENGTH)
    extractor = knf.OnlineFbank(_kaldi_options())
    # One second at a time: knf holds the GIL for the whole of one call (11 ms for 18 s of speech), which
    # the event loop and the inference thread would wait for; the frames are the same.
    for start in range(0, samples.size, SAMPLE_RATE_HZ):
        extractor.accept_waveform(float(SAMPLE_RATE_HZ), samples[start : start + SAMPLE_RATE_HZ])
    extractor.input_finished()
    n_frames = extractor.num_frames_ready
    log_mel = np.empty((n_frames, N_MELS), dtype=np.float32)
    for index in range(n_frames):  # one C++ call per 10 ms frame; the maths runs inside knf
        log_mel[index] = extractor.get_frame(index)
    return log_mel


def campplus_fbank(waveform: npt.ArrayLike) -> FloatArray:
    """CAM++ input features, (frames, 80): Kaldi fbank minus its mean over time."""
    log_mel = campplus_log_mel(waveform).astype(np.float64)
    normalised: FloatArray = (log_mel - log_mel.mean(axis=0, keepdims=True)).astype(np.float32)
    return normalised
