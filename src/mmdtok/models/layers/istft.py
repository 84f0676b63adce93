"""Vocos' ISTFT head: frames -> a complex spectrum (magnitude and phase) -> audio by an
inverse STFT, for every runtime (whole, time-major, chunked, exported).

Per frame, a linear layer predicts ``n_fft / 2 + 1`` log-magnitudes and as many phases;
``S = min(exp(m), 100) * (cos p + i sin p)``. The inverse STFT is Vocos' "same"
padding: each frame's inverse real FFT, times a periodic Hann window of ``n_fft``
samples, overlap-added at ``hop`` samples, ``(n_fft - hop) / 2`` samples trimmed at each
end and divided by the overlap-added squared window. ``T`` frames give exactly
``T * hop`` samples.

The whole pass, the CPU plan and chunking run ``torch.fft.irfft`` and an overlap-add
of shifted slices. For export, :meth:`ISTFTHead.prepare_export` switches to the same
sums as one transposed convolution with a fixed kernel (the windowed inverse-DFT basis,
``n_fft + 2`` real inputs per channel), an operator every ONNX runtime has. At the ends
of the audio fewer frames overlap; the division by the window envelope restores the
gain there (Vocos' choice; the first and last ``(n_fft - hop) / 2`` samples rest on
fewer frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.runtime.layer import Layer, NotStreamable, Streamer, WeightCache

MAX_MAGNITUDE = 1e2  # Vocos' safeguard against very large magnitudes


def inverse_dft_basis(n_fft: int) -> Tensor:
    """[n_fft + 2, n_fft]: row ``c`` (c <= n_fft/2) maps the real part of bin c to its
    samples, row ``n_fft/2 + 1 + c`` the imaginary part, as ``irfft(norm="backward")``
    with a periodic Hann window applied."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    c = torch.arange(bins, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * c * n / n_fft
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    real = weight * torch.cos(angle) / n_fft
    imag = -weight * torch.sin(angle) / n_fft
    imag[0] = imag[-1] = 0.0  # irfft ignores their imaginary parts
    return torch.cat([real, imag]) * window


class ISTFTHead(Layer):
    """[B, dim, T] -> audio [B, channels, T * hop]."""

    def __init__(self, dim: int, n_fft: int, hop: int, channels: int = 1) -> None:
        super().__init__()
        if n_fft % 2 or (n_fft - hop) % 2 or n_fft <= hop:
            # (at n_fft == hop the Hann window's zero at each frame's start leaves the
            # overlap-added envelope zero there: nothing to divide by)
            raise ValueError(f"n_fft must be even, more than the hop, and n_fft - hop "
                             f"even; got n_fft {n_fft}, hop {hop}")
        self.n_fft, self.hop, self.channels = n_fft, hop, channels
        self.out = nn.Linear(dim, channels * (n_fft + 2))
        basis = inverse_dft_basis(n_fft).float()
        self.register_buffer("basis", basis.repeat(channels, 1)[:, None], persistent=False)
        window = torch.hann_window(n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("window_sq", window.square()[None, None], persistent=False)
        self.exporting = False  # the transposed-convolution form (prepare_export)

    def _spectrum(self, coefficients: Tensor) -> tuple[Tensor, Tensor]:
        """(real, imaginary) [B, C, bins, T] of [B, C * (n_fft + 2), T] (per channel:
        log-magnitudes, then phases)."""
        batch, _, frames = coefficients.shape
        parts = coefficients.view(batch, self.channels, 2, self.n_fft // 2 + 1, frames)
        magnitude = torch.exp(parts[:, :, 0]).clamp(max=MAX_MAGNITUDE)
        phase = parts[:, :, 1]
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)

    def _envelope(self, frames: int, like: Tensor) -> Tensor:
        """The overlap-added squared window of ``frames`` frames, [1, 1, samples]."""
        if self.exporting or self.n_fft % self.hop:
            return F.conv_transpose1d(like.new_ones(1, 1, frames),
                                      self.window_sq.to(like.dtype), stride=self.hop)
        return self._overlap_add(self.window_sq.to(like.dtype).expand(1, 1, frames, -1))

    def _overlap_add(self, windowed: Tensor) -> Tensor:
        """[B, C, T, n_fft] frames overlap-added at the hop (n_fft a multiple of it), as
        ``n_fft / hop`` shifted slices: [B, C, (T - 1) * hop + n_fft]."""
        batch, channels, frames, _ = windowed.shape
        shifts = self.n_fft // self.hop
        blocks = windowed.reshape(batch, channels, frames, shifts, self.hop)
        audio = blocks.new_zeros(batch, channels, frames + shifts - 1, self.hop)
        for j in range(shifts):
            audio[:, :, j : j + frames] += blocks[:, :, :, j]
        return audio.view(batch, channels, -1)

    def _trimmed(self, audio: Tensor, frames: int) -> Tensor:
        pad = (self.n_fft - self.hop) // 2
        envelope = self._envelope(frames, audio)
        end = audio.shape[-1] - pad
        return audio[..., pad:end] / envelope[..., pad:end]

    def _audio(self, coefficients: Tensor) -> Tensor:
        frames = coefficients.shape[-1]
        real, imag = self._spectrum(coefficients)
        if self.exporting or self.n_fft % self.hop:
            batch = coefficients.shape[0]
            spectrum = torch.cat([real, imag], 2).reshape(batch, -1, frames)
            audio = F.conv_transpose1d(spectrum, self.basis.to(spectrum.dtype),
                                       stride=self.hop, groups=self.channels)
            return self._trimmed(audio, frames)
        # [B, C, T, n_fft] windowed frames, overlap-added as n_fft / hop shifted slices
        windowed = torch.fft.irfft(torch.complex(real, imag).transpose(2, 3), self.n_fft,
                                   norm="backward") * self.window.to(real.dtype)
        return self._trimmed(self._overlap_add(windowed), frames)

    def prepare_export(self) -> None:
        self.exporting = True

    def forward(self, x: Tensor) -> Tensor:
        return self._audio(self.out(x.transpose(1, 2)).transpose(1, 2))

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        audio = self._audio(self.out(x).transpose(1, 2))
        return audio.transpose(1, 2), 0

    def reach(self, scale: float) -> tuple[float, float]:
        return math.ceil(self.n_fft / self.hop) / scale, scale * self.hop

    @property
    def causal(self) -> bool:
        return False

    def streamer(self) -> Streamer:
        raise NotStreamable("the inverse STFT's centred window looks ahead by "
                            f"{(self.n_fft - self.hop) // 2} samples")

    def accepts(self, length: int) -> bool:
        return length >= 1


__all__ = ["MAX_MAGNITUDE", "ISTFTHead", "inverse_dft_basis"]
