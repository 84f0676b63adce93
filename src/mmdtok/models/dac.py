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

Both halves are :class:`~mmdtok.models.runtime.stack.LayerStack` of layers that tell
the runtimes their reach (chunked encoding cuts with it as context); with no recurrent
layer, each half is all front. None of them is causal: DAC does not stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.models.layers import Snake, Tanh, checked_shape
from mmdtok.models.runtime.layer import Layer, WeightCache
from mmdtok.models.runtime.stack import LayerStack


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


class DACConv1d(Layer, nn.Conv1d):
    """A plain convolution with DAC's fixed zero padding (centred: it looks ahead)."""

    def reach(self, scale: float) -> tuple[float, float]:
        return self.dilation[0] * (self.kernel_size[0] - 1) / scale, scale / self.stride[0]

    @property
    def causal(self) -> bool:
        return False


class DACConvTranspose1d(Layer, nn.ConvTranspose1d):
    """A plain transposed convolution with DAC's fixed padding (centred)."""

    def reach(self, scale: float) -> tuple[float, float]:
        return math.ceil(self.kernel_size[0] / self.stride[0]) / scale, scale * self.stride[0]

    @property
    def causal(self) -> bool:
        return False


class PadToMultiple(Layer):
    """Zeros on the right up to a multiple of ``multiple`` steps (DAC pads its input to
    a multiple of the hop, and its output back to ``T * hop``)."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, -x.shape[-1] % self.multiple))

    def reach(self, scale: float) -> tuple[float, float]:
        return 0.0, scale

    @property
    def causal(self) -> bool:
        return False


def _conv(c_in: int, c_out: int, kernel: int, **options: Any) -> DACConv1d:
    return nn.utils.parametrizations.weight_norm(DACConv1d(c_in, c_out, kernel, **options))


class DACResidualUnit(Layer):
    """``x + conv1x1(snake(conv7_dilated(snake(x))))``, zero padding keeping the length."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake(dim)
        self.conv1 = _conv(dim, dim, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(dim)
        self.conv2 = _conv(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        return self(x.transpose(1, 2)).transpose(1, 2).contiguous(), 0


def _residual_units(dim: int) -> tuple[DACResidualUnit, ...]:
    return tuple(DACResidualUnit(dim, dilation) for dilation in (1, 3, 9))


class DACEncoderBlock(Layer):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(dim)
        self.snake1 = Snake(dim)
        self.conv1 = _conv(dim, dim * 2, 2 * stride, stride=stride,
                           padding=math.ceil(stride / 2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class DACDecoderBlock(Layer):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake(dim)
        self.conv_t1 = nn.utils.parametrizations.weight_norm(DACConvTranspose1d(
            dim, dim // 2, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class _PlainStack(LayerStack):
    """DAC's convolutions are plain oneDNN ones: the time-major CPU plan does not pay."""

    def prepare_cpu_inference(self) -> None:
        self.drop_cpu_inference()


class DACEncoder(_PlainStack):
    """Audio [B, C, L] -> latent [B, D, ceil(L / hop)] (``out_dim`` channels instead of D
    when given)."""

    def __init__(self, cfg: DACConfig, out_dim: int | None = None) -> None:
        super().__init__()
        self.samples_per_frame = float(cfg.hop_length)
        self.pad = PadToMultiple(cfg.hop_length)
        self.conv1 = _conv(cfg.channels, cfg.encoder_dim, 7, padding=3)
        self.block = nn.ModuleList(DACEncoderBlock(cfg.encoder_dim * 2 ** i, stride)
                                   for i, stride in enumerate(cfg.ratios))
        self.snake1 = Snake(cfg.dimension)
        self.conv2 = _conv(cfg.dimension, out_dim or cfg.dimension, 3, padding=1)

    def sequence(self) -> list[Layer]:
        return [self.pad, self.conv1, *self.block, self.snake1, self.conv2]


class DACDecoder(_PlainStack):
    """Latent [B, D, T] -> audio [B, C, T * hop] in [-1, 1] (tanh)."""

    def __init__(self, cfg: DACConfig) -> None:
        super().__init__()
        self.conv1 = _conv(cfg.dimension, cfg.decoder_dim, 7, padding=3)
        self.block = nn.ModuleList(DACDecoderBlock(cfg.decoder_dim // 2 ** i, stride)
                                   for i, stride in enumerate(reversed(cfg.ratios)))
        out_dim = cfg.decoder_dim // 2 ** len(cfg.ratios)
        self.snake1 = Snake(out_dim)
        self.conv2 = _conv(out_dim, cfg.channels, 7, padding=3)
        self.tanh, self.pad = Tanh(), PadToMultiple(cfg.hop_length)

    def sequence(self) -> list[Layer]:
        return [self.conv1, *self.block, self.snake1, self.conv2, self.tanh, self.pad]


__all__ = ["DACConfig", "DACDecoder", "DACEncoder"]
