"""Reconstruction losses on spectrograms (no torchaudio): the multi-scale mel loss of
EnCodec and a multi-resolution STFT loss.

Multi-scale mel (EnCodec): for window sizes ``2**i``, i in [start, end), hop a quarter of
the window, ``n_mels`` mel bands from ``f_min``: L1 between mel magnitudes plus
``sqrt(2**i - 1)`` times the mean squared error between their base-10 logs (floored).

Multi-resolution STFT: for FFT sizes 2048, 1024, 512 and 256 (hop a quarter, Hann), the
mean absolute difference of base-10 log magnitudes (floored), plus, in the loss, the
spectral convergence ``||X| - |Y||_F / ||Y||_F`` of Parallel WaveGAN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def hz_to_mel(hz: Tensor | float) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters on the HTK mel scale: [n_mels, n_fft // 2 + 1] (float32), each
    peaking at 1 on its centre frequency."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)),
                                     n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def magnitude(audio: Tensor, n_fft: int, hop: int) -> Tensor:
    """|STFT| of audio [B, C, L] (channels folded into the batch), Hann window, centred
    with reflection: [B * C, n_fft // 2 + 1, frames]."""
    flat = audio.reshape(-1, audio.shape[-1])
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    if flat.shape[-1] <= n_fft // 2:  # reflection needs more samples than the pad
        flat = F.pad(flat, (0, n_fft // 2 + 1 - flat.shape[-1]))
    spec = torch.stft(flat, n_fft, hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    return spec.abs()


class MultiScaleMelLoss(nn.Module):
    """EnCodec's multi-scale mel reconstruction loss between audio [B, C, L] tensors.

    Args:
        sample_rate: of the audio.
        scales: exponents i of the window sizes ``2**i`` (EnCodec: 6..10, 2**6 to 2**10).
        n_mels, f_min, f_max: the mel bands.
        floor: magnitudes are floored here before the log.
        normalized: divide by the sum of the per-scale weights.
    """

    def __init__(self, sample_rate: int, scales: range = range(6, 11), n_mels: int = 64,
                 f_min: float = 64.0, f_max: float | None = None, floor: float = 1e-5,
                 normalized: bool = False) -> None:
        super().__init__()
        self.scales, self.floor = list(scales), floor
        for i in self.scales:
            self.register_buffer(f"mel_{i}", mel_filterbank(2**i, n_mels, sample_rate, f_min,
                                                            f_max), persistent=False)
        self.weights = [math.sqrt(2**i - 1) for i in self.scales]
        self.scale = 1.0 / (len(self.scales) + sum(self.weights)) if normalized else 1.0

    def mel(self, audio: Tensor, i: int) -> Tensor:
        bank = getattr(self, f"mel_{i}")
        return torch.matmul(bank, magnitude(audio, 2**i, 2**i // 4))

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        if estimate.shape != target.shape:
            raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
        total = estimate.new_zeros(())
        for i, weight in zip(self.scales, self.weights):
            mel_x, mel_y = self.mel(estimate, i), self.mel(target, i)
            log_x = torch.log10(mel_x.clamp(min=self.floor))
            log_y = torch.log10(mel_y.clamp(min=self.floor))
            total = total + F.l1_loss(mel_x, mel_y) + weight * F.mse_loss(log_x, log_y)
        return total * self.scale


STFT_SIZES = (2048, 1024, 512, 256)


def _magnitudes(estimate: Tensor, target: Tensor, sizes: tuple[int, ...]):
    """(|STFT| of ``estimate``, of ``target``) at each FFT size, hop a quarter."""
    for n_fft in sizes:
        yield magnitude(estimate, n_fft, n_fft // 4), magnitude(target, n_fft, n_fft // 4)


def _log_gap(x: Tensor, y: Tensor, floor: float) -> Tensor:
    """Mean absolute difference of log10 magnitudes, floored at ``floor``."""
    return (x.clamp(min=floor).log10() - y.clamp(min=floor).log10()).abs().mean()


def log_stft_distance(estimate: Tensor, target: Tensor, sizes: tuple[int, ...] = STFT_SIZES,
                      floor: float = 1e-5) -> Tensor:
    """Mean over ``sizes`` of the mean absolute difference of log10 STFT magnitudes
    (floored at ``floor``) between audio [B, C, L] tensors; differentiable."""
    total = estimate.new_zeros(())
    for x, y in _magnitudes(estimate, target, sizes):
        total = total + _log_gap(x, y, floor)
    return total / len(sizes)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude distance, averaged over FFT ``sizes``,
    between audio [B, C, L] tensors (the log term is :func:`log_stft_distance`).

    ``mid_side`` (default on): stereo input is compared as left, right, mid and side
    (as Stable Audio's autoencoder loss), so that an error in the stereo image costs as
    much as one in a channel; mono input is unaffected."""

    def __init__(self, sizes: tuple[int, ...] = STFT_SIZES, floor: float = 1e-5,
                 eps: float = 1e-7, mid_side: bool = True) -> None:
        super().__init__()
        self.sizes, self.floor, self.eps = tuple(sizes), floor, eps
        self.mid_side = mid_side

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        if estimate.shape != target.shape:
            raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
        if self.mid_side and estimate.shape[1] == 2:
            estimate, target = with_mid_side(estimate), with_mid_side(target)
        total = estimate.new_zeros(())
        for x, y in _magnitudes(estimate, target, self.sizes):
            convergence = torch.linalg.vector_norm(x - y) / (
                torch.linalg.vector_norm(y) + self.eps)
            total = total + convergence + _log_gap(x, y, self.floor)
        return total / len(self.sizes)


def with_mid_side(audio: Tensor) -> Tensor:
    """Stereo audio [B, 2, L] -> [B, 4, L]: left, right, mid (L + R) / 2, side (L - R) / 2."""
    left, right = audio[:, :1], audio[:, 1:]
    return torch.cat([audio, (left + right) / 2, (left - right) / 2], dim=1)


def mel_distance(estimate: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """A quality metric: the normalized multi-scale mel loss (lower is better)."""
    return MultiScaleMelLoss(sample_rate, normalized=True).to(estimate.device)(estimate, target)


def si_sdr(estimate: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB per item: [B, C, L] -> [B]."""
    x = estimate.reshape(estimate.shape[0], -1).double()
    y = target.reshape(target.shape[0], -1).double()
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    scale = (x * y).sum(dim=1, keepdim=True) / (y.pow(2).sum(dim=1, keepdim=True) + eps)
    projection = scale * y
    noise = x - projection
    ratio = projection.pow(2).sum(dim=1) / (noise.pow(2).sum(dim=1) + eps)
    return (10 * torch.log10(ratio + eps)).to(estimate.dtype)
