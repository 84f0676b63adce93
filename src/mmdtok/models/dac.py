"""The encoder and decoder of DAC (Descript Audio Codec), the second architecture behind
:class:`~mmdtok.models.CodecConfig` (``"dac"`` in place of ``"seanet"``).

Encoder: conv(7) -> per ratio [3 residual units (dilations 1, 3, 9) -> Snake -> strided
conv (kernel 2s, padding ceil(s/2)), channels doubled] -> Snake -> conv(3) to the latent.
Decoder: conv(7) -> per ratio [Snake -> transposed conv (kernel 2s, padding ceil(s/2)),
channels halved -> 3 residual units] -> Snake -> conv(7) -> tanh. Every convolution pads
with zeros, symmetrically and by a fixed amount (unlike SEANet's EnCodec padding), has
weight norm, and there is no LSTM. The module and parameter names are those of
``transformers``' DacModel, so that its state dict loads after the weight-norm renaming
of :mod:`mmdtok.convert.dac`.

Lengths: the encoder first pads the input with zeros on the right to a multiple of the
hop (as DAC's ``preprocess`` does), so ``L`` samples give ``ceil(L / hop)`` frames. With
an odd ratio (5 in the 16 and 24 kHz models) DAC's transposed convolution gives one
sample less than ``T * s``; the decoder pads its output with zeros on the right to
``T * hop`` samples (a few samples, 8 for the 16 kHz model), which keeps mmdtok's length
contract and leaves every sample DAC computes unchanged.

Both halves speak the interface of the chunked path (:mod:`mmdtok.models.chunked`):
``front`` -> ``lstm_step`` (nothing recurrent here: the input comes back) -> ``back``.
The encoder's work is all in its front (audio in, frames out), the decoder's in its back
(frames in, audio out), each with the reach of its convolutions as context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.models.layers import Snake, checked_shape


@dataclass(frozen=True)
class DACConfig:
    """Architecture of a DAC encoder/decoder pair (``transformers``' DacConfig names in
    brackets).

    ratios: downsampling ratios in encoder order [downsampling_ratios]; the decoder uses
        them reversed; their product is the hop length.
    encoder_dim: channels of the first convolution, doubled at each ratio
        [encoder_hidden_size]; the latent has ``encoder_dim * 2**len(ratios)`` channels
        [hidden_size]. decoder_dim: channels of the decoder's first convolution, halved
        at each ratio [decoder_hidden_size].
    """

    channels: int = 1
    encoder_dim: int = 64
    decoder_dim: int = 1536
    ratios: tuple[int, ...] = (2, 4, 8, 8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", checked_shape(self.channels, self.ratios))
        for name in ("encoder_dim", "decoder_dim"):  # no terabyte allocations
            if not 1 <= getattr(self, name) <= 8192:
                raise ValueError(f"DAC {name} must be in 1..8192, got {getattr(self, name)}")
        if self.dimension > 65_536:
            raise ValueError(f"DAC encoder_dim {self.encoder_dim} doubled at each of "
                             f"{len(self.ratios)} ratios exceeds 65,536 channels")
        if self.decoder_dim % 2 ** len(self.ratios):
            raise ValueError(f"DAC decoder_dim {self.decoder_dim} must be divisible by "
                             f"2**{len(self.ratios)} (halved at each ratio)")

    @property
    def dimension(self) -> int:
        """Latent channels D."""
        return self.encoder_dim * 2 ** len(self.ratios)

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def causal(self) -> bool:
        return False

    @property
    def wave_filters(self) -> int:
        """Channels of the layers at the audio rate (the largest activations)."""
        return max(self.encoder_dim, self.decoder_dim // 2 ** len(self.ratios))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DACConfig:
        return config_from_dict(cls, data, "DAC config")


def _conv(c_in: int, c_out: int, kernel: int, **options: Any) -> nn.Conv1d:
    return nn.utils.parametrizations.weight_norm(nn.Conv1d(c_in, c_out, kernel, **options))


class DACResidualUnit(nn.Module):
    """``x + conv1x1(snake(conv7_dilated(snake(x))))``, zero padding keeping the length."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake(dim)
        self.conv1 = _conv(dim, dim, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(dim)
        self.conv2 = _conv(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


def _residual_units(dim: int) -> tuple[DACResidualUnit, ...]:
    return tuple(DACResidualUnit(dim, dilation) for dilation in (1, 3, 9))


class DACEncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(dim)
        self.snake1 = Snake(dim)
        self.conv1 = _conv(dim, dim * 2, 2 * stride, stride=stride,
                           padding=math.ceil(stride / 2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class DACDecoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake(dim)
        self.conv_t1 = nn.utils.parametrizations.weight_norm(nn.ConvTranspose1d(
            dim, dim // 2, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


def dac_context_frames(module: nn.Module, samples_per_frame: float) -> int:
    """Frames of context on each side beyond which ``module``'s output for a frame does
    not depend on its input (a conservative bound), as
    :func:`~mmdtok.models.layers.context_frames` for the plain convolutions here."""
    reach, scale = 0.0, float(samples_per_frame)
    for layer in module.modules():
        if isinstance(layer, nn.ConvTranspose1d):
            reach += math.ceil(layer.kernel_size[0] / layer.stride[0]) / scale
            scale *= layer.stride[0]
        elif isinstance(layer, nn.Conv1d):
            reach += layer.dilation[0] * (layer.kernel_size[0] - 1) / scale
            scale /= layer.stride[0]
    return math.ceil(reach) + 1


class _OneStage(nn.Module):
    """The chunked path's interface (front -> recurrence -> back) for a network without
    recurrence: ``lstm_step`` returns its input and its (empty) state."""

    front_context: int
    back_context: int

    def initial_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        empty = x.new_zeros(x.shape[0], 1, 1)
        return empty, empty

    def lstm_step(self, x: Tensor, state: tuple[Tensor, Tensor] | None
                  ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return x, state if state is not None else self.initial_state(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.back(self.front(x))

    def prepare_cpu_inference(self) -> None:
        """Nothing to prepare: the time-major CPU path is SEANet's."""

    def drop_cpu_inference(self) -> None:
        """Nothing to drop (see :meth:`prepare_cpu_inference`)."""


class DACEncoder(_OneStage):
    """Audio [B, C, L] -> latent [B, D, ceil(L / hop)] (``out_dim`` channels instead of D
    when given)."""

    def __init__(self, cfg: DACConfig, out_dim: int | None = None) -> None:
        super().__init__()
        self.hop_length = cfg.hop_length
        self.conv1 = _conv(cfg.channels, cfg.encoder_dim, 7, padding=3)
        self.block = nn.ModuleList(DACEncoderBlock(cfg.encoder_dim * 2 ** i, stride)
                                   for i, stride in enumerate(cfg.ratios))
        self.snake1 = Snake(cfg.dimension)
        self.conv2 = _conv(cfg.dimension, out_dim or cfg.dimension, 3, padding=1)
        self.front_context, self.back_context = dac_context_frames(self, cfg.hop_length), 1

    def front(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, -x.shape[-1] % self.hop_length))
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))

    def back(self, x: Tensor) -> Tensor:
        return x


class DACDecoder(_OneStage):
    """Latent [B, D, T] -> audio [B, C, T * hop] in [-1, 1] (tanh)."""

    def __init__(self, cfg: DACConfig) -> None:
        super().__init__()
        self.hop_length = cfg.hop_length
        self.conv1 = _conv(cfg.dimension, cfg.decoder_dim, 7, padding=3)
        self.block = nn.ModuleList(DACDecoderBlock(cfg.decoder_dim // 2 ** i, stride)
                                   for i, stride in enumerate(reversed(cfg.ratios)))
        out_dim = cfg.decoder_dim // 2 ** len(cfg.ratios)
        self.snake1 = Snake(out_dim)
        self.conv2 = _conv(out_dim, cfg.channels, 7, padding=3)
        self.front_context, self.back_context = 1, dac_context_frames(self, 1.0)

    def front(self, x: Tensor) -> Tensor:
        return x

    def back(self, x: Tensor) -> Tensor:
        frames = x.shape[-1]
        y = self.conv1(x)
        for block in self.block:
            y = block(y)
        y = torch.tanh(self.conv2(self.snake1(y)))
        return F.pad(y, (0, frames * self.hop_length - y.shape[-1]))


__all__ = ["DACConfig", "DACDecoder", "DACEncoder", "dac_context_frames"]
