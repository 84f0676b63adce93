"""EnCodec's multi-scale STFT discriminator (MS-STFTD); its losses are in
:mod:`mmdtok.losses.adversarial`.

Each scale takes the complex STFT of the audio (real and imaginary parts as channels,
[B, 2C, frames, bins]) through 2-D convolutions that dilate along time and stride along
frequency, and returns logits plus its feature maps (for feature matching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _wn(conv: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.weight_norm(conv)


class STFTDiscriminator(nn.Module):
    """One scale: STFT of ``n_fft`` (hop n_fft/4), then conv (3x9), three convs (3x9)
    dilated 1, 2, 4 along time with stride 2 along frequency, conv (3x3), and a (3x3)
    convolution to one logit channel."""

    def __init__(self, n_fft: int, channels: int = 1, filters: int = 32,
                 negative_slope: float = 0.3) -> None:
        super().__init__()
        self.n_fft, self.hop, self.negative_slope = n_fft, n_fft // 4, negative_slope
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [_wn(nn.Conv2d(2 * channels, filters, (3, 9), padding=(1, 4)))]
        for dilation in (1, 2, 4):
            layers.append(_wn(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2),
                                        dilation=(dilation, 1), padding=(dilation, 4))))
        layers.append(_wn(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(layers)
        self.out = _wn(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, audio: Tensor) -> Tensor:
        """audio [B, C, L] -> [B, 2C, frames, bins]."""
        batch, channels, length = audio.shape
        spec = torch.stft(audio.reshape(-1, length), self.n_fft, self.hop,
                          window=self.window.to(audio.dtype), center=True,
                          return_complex=True)  # [B*C, bins, frames]
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B*C, 2, frames, bins]
        return spec.reshape(batch, 2 * channels, *spec.shape[2:])

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        x, features = self.spectrogram(audio), []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        return self.out(x), features


@dataclass(frozen=True)
class DiscriminatorOutput:
    """Per scale: logits [B, 1, frames, bins'] and feature maps."""

    logits: list[Tensor]
    features: list[list[Tensor]]


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFTD: one :class:`STFTDiscriminator` per FFT size."""

    def __init__(self, channels: int = 1, filters: int = 32,
                 n_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128)) -> None:
        super().__init__()
        self.scales = nn.ModuleList([STFTDiscriminator(n, channels, filters) for n in n_ffts])

    def forward(self, audio: Tensor) -> DiscriminatorOutput:
        results = [scale(audio) for scale in self.scales]
        return DiscriminatorOutput([r[0] for r in results], [r[1] for r in results])
