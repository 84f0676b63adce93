"""SEANet encoder and decoder, the convolutional autoencoder of EnCodec.

Encoder: conv -> [residual units -> ELU -> strided conv] per ratio -> LSTM -> ELU -> conv.
Decoder: the mirror image with transposed convolutions. ``activation="snake"`` puts DAC's
Snake (a learned frequency per channel) where ELU is. The layer list keeps EnCodec's
order, so that a state dict converts by renaming a few keys.

Both are :class:`~mmdtok.models.runtime.stack.LayerStack` of the layers in
:mod:`mmdtok.models.layers`: every runtime (the time-major CPU plan, chunked encoding,
streaming when causal, ONNX export) runs them through the layers' own methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.models.layers import (
    ACTIVATIONS,
    Activation,
    Conv1d,
    ConvTranspose1d,
    Norm,
    PadMode,
    ResidualUnit,
    SkipLSTM,
    activation,
    checked_shape,
)
from mmdtok.models.runtime.stack import LayerStack

_BOUNDS = {"dimension": 8192, "n_filters": 4096, "n_residual_layers": 16, "kernel_size": 63,
           "last_kernel_size": 63, "residual_kernel_size": 63, "dilation_base": 16,
           "compress": 16, "lstm_layers": 16}


@dataclass(frozen=True)
class SEANetConfig:
    """Architecture of a SEANet encoder/decoder pair (EnCodec's names in brackets).

    ratios: upsampling ratios in decoder order [upsampling_ratios]; the encoder uses them
        reversed; their product is the hop length.
    dimension: latent channels D [hidden_size]. n_filters: channels of the first
        convolution, doubled at each downsampling [num_filters].
    causal: left-only padding (streaming EnCodec 24 kHz) or centred (MusicGen 32 kHz).
    conv_shortcut: a 1x1 convolution on the residual units' skip (else identity).
    activation: "elu" (EnCodec) or "snake" (DAC's periodic activation, a learned
        frequency per channel).
    """

    channels: int = 1
    dimension: int = 128
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 5, 4, 4)
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    causal: bool = False
    pad_mode: PadMode = "reflect"
    norm: Norm = "weight_norm"
    conv_shortcut: bool = False
    trim_right_ratio: float = 1.0
    activation: Activation = "elu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SEANet activation must be one of {ACTIVATIONS}, got "
                             f"{self.activation!r}")
        object.__setattr__(self, "ratios", checked_shape(self.channels, self.ratios))
        for name, bound in _BOUNDS.items():  # a crafted config must not allocate terabytes
            if not 1 <= getattr(self, name) <= bound:
                raise ValueError(f"SEANet {name} must be in 1..{bound}, got "
                                 f"{getattr(self, name)}")
        if self.n_filters * 2 ** len(self.ratios) > 65_536:
            raise ValueError(f"SEANet n_filters {self.n_filters} doubled at each of "
                             f"{len(self.ratios)} ratios exceeds 65,536 channels")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def wave_filters(self) -> int:
        """Channels of the layers at the audio rate (the largest activations)."""
        return self.n_filters

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SEANetConfig:
        return config_from_dict(cls, data, "SEANet config")

    def conv_args(self) -> dict[str, Any]:
        return {"causal": self.causal, "pad_mode": self.pad_mode, "norm": self.norm}


def _residual_units(cfg: SEANetConfig, dim: int) -> list[nn.Module]:
    return [ResidualUnit(dim, cfg.residual_kernel_size, cfg.dilation_base ** j,
                         compress=cfg.compress, conv_shortcut=cfg.conv_shortcut,
                         act=cfg.activation, **cfg.conv_args())
            for j in range(cfg.n_residual_layers)]


class SEANetEncoder(LayerStack):
    """Audio [B, C, L] -> latent [B, D, ceil(L / hop)] (``out_dim`` channels instead of
    D when given: a VAE bottleneck takes a mean and a scale per latent channel)."""

    def __init__(self, cfg: SEANetConfig, out_dim: int | None = None) -> None:
        super().__init__()
        args = cfg.conv_args()
        layers: list[nn.Module] = [Conv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, **args)]
        dim = cfg.n_filters
        for ratio in reversed(cfg.ratios):
            layers += _residual_units(cfg, dim)
            layers += [activation(cfg.activation, dim),
                       Conv1d(dim, dim * 2, ratio * 2, stride=ratio, **args)]
            dim *= 2
        self.lstm_index = len(layers)
        layers += [SkipLSTM(dim, cfg.lstm_layers), activation(cfg.activation, dim),
                   Conv1d(dim, out_dim or cfg.dimension, cfg.last_kernel_size, **args)]
        self.layers = nn.ModuleList(layers)
        self.samples_per_frame = float(cfg.hop_length)


class SEANetDecoder(LayerStack):
    """Latent [B, D, T] -> audio [B, C, T * hop]."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        args = cfg.conv_args()
        dim = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [Conv1d(cfg.dimension, dim, cfg.kernel_size, **args)]
        self.lstm_index = len(layers)
        layers.append(SkipLSTM(dim, cfg.lstm_layers))
        for ratio in cfg.ratios:
            layers += [activation(cfg.activation, dim),
                       ConvTranspose1d(dim, dim // 2, ratio * 2, stride=ratio,
                                                 causal=cfg.causal, norm=cfg.norm,
                                                 trim_right_ratio=cfg.trim_right_ratio)]
            dim //= 2
            layers += _residual_units(cfg, dim)
        layers += [activation(cfg.activation, dim),
                   Conv1d(dim, cfg.channels, cfg.last_kernel_size, **args)]
        self.layers = nn.ModuleList(layers)
