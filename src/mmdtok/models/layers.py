"""The SEANet building blocks of EnCodec: padded convolutions with weight norm, residual
units with dilations, and an LSTM with a skip connection.

The padding follows EnCodec exactly (so that published weights give the same output):
a convolution of effective kernel ``k`` and stride ``s`` pads ``k - s`` samples in
total (all on the left when causal, split with the extra sample on the left otherwise),
plus what the last frame needs on the right, so that ``L`` samples give ``ceil(L / s)``
frames.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

PadMode = Literal["reflect", "constant", "replicate"]
Norm = Literal["weight_norm", "none"]
Activation = Literal["elu", "snake"]
ACTIVATIONS = ("elu", "snake")


def conv_padding(length: int, kernel: int, stride: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding of a convolution with effective ``kernel`` and ``stride`` on
    ``length`` samples, so that the output has ``ceil(length / stride)`` frames."""
    total = kernel - stride
    extra = -length % stride  # ceil(length / stride) * stride - length, in integers
    if causal:
        return total, extra
    right = total // 2
    return total - right, right + extra


def pad1d(x: Tensor, left: int, right: int, mode: PadMode) -> Tensor:
    """``F.pad`` on the last axis; reflection of an input shorter than the padding first
    appends zeros (as EnCodec does) instead of failing."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right) + (0, 0) * (x.dim() - 3), mode="reflect")
    return padded[..., : padded.shape[-1] - extra] if extra else padded


def transposed_trim(kernel: int, stride: int, causal: bool,
                    trim_right_ratio: float = 1.0) -> tuple[int, int]:
    """(left, right) samples removed after a transposed convolution."""
    total = kernel - stride
    right = math.ceil(total * trim_right_ratio) if causal else total // 2
    return total - right, right


def _normalize(conv: nn.Module, norm: Norm) -> nn.Module:
    if norm == "weight_norm":
        return nn.utils.parametrizations.weight_norm(conv)
    if norm != "none":
        raise ValueError(f"norm must be 'weight_norm' or 'none', got {norm!r}")
    return conv


class Conv1d(nn.Module):
    """A convolution that pads its input as EnCodec does ([B, C, L] -> [B, C', ceil(L/s)]).

    ``conv`` holds the weights (under a weight-norm parametrization when ``norm`` is
    "weight_norm"; :func:`fold_weight_norm` removes it for inference).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, *, causal: bool = False,
                 pad_mode: PadMode = "reflect", norm: Norm = "weight_norm") -> None:
        super().__init__()
        self.conv = _normalize(nn.Conv1d(in_channels, out_channels, kernel_size, stride,
                                         dilation=dilation), norm)
        self.kernel = (kernel_size - 1) * dilation + 1
        self.stride, self.causal, self.pad_mode = stride, causal, pad_mode

    def forward(self, x: Tensor) -> Tensor:
        left, right = conv_padding(x.shape[-1], self.kernel, self.stride, self.causal)
        return self.conv(pad1d(x, left, right, self.pad_mode))


class ConvTranspose1d(nn.Module):
    """A transposed convolution trimmed as EnCodec does ([B, C, T] -> [B, C', T * s])."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, *, causal: bool = False, trim_right_ratio: float = 1.0,
                 norm: Norm = "weight_norm") -> None:
        super().__init__()
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1 only makes sense for causal convolutions")
        self.conv = _normalize(nn.ConvTranspose1d(in_channels, out_channels, kernel_size,
                                                  stride), norm)
        self.kernel, self.stride = kernel_size, stride
        self.trim = transposed_trim(kernel_size, stride, causal, trim_right_ratio)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]


def snake(x: Tensor, alpha: Tensor, eps: float = 1e-9) -> Tensor:
    """The Snake activation of DAC, ``x + sin(alpha x)**2 / alpha`` (``alpha`` broadcast
    against ``x``): periodic bumps of height ``1 / alpha`` on the identity."""
    return x + torch.sin(alpha * x).pow(2) / (alpha + eps)


class Snake(nn.Module):
    """:func:`snake` with a learned ``alpha`` per channel (initially 1), on [B, C, L]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return snake(x, self.alpha)


def activation(kind: Activation, channels: int) -> nn.Module:
    """ELU (EnCodec) or Snake (DAC) for ``channels`` channels."""
    if kind == "elu":
        return nn.ELU()
    if kind == "snake":
        return Snake(channels)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class ResidualUnit(nn.Module):
    """``x + f(x)`` with ``f`` = activation, dilated conv (dim -> dim / compress),
    activation, 1x1 conv back to ``dim``; the skip is a 1x1 conv when
    ``conv_shortcut``."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, *, compress: int,
                 conv_shortcut: bool, act: Activation = "elu", **conv_args: object) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.ModuleList([
            activation(act, dim),
            Conv1d(dim, hidden, kernel_size, dilation=dilation, **conv_args),
            activation(act, hidden), Conv1d(hidden, dim, 1, **conv_args),
        ])
        self.shortcut = Conv1d(dim, dim, 1, **conv_args) if conv_shortcut else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.block:
            y = layer(y)
        return self.shortcut(x) + y


LSTMState = tuple[Tensor, Tensor]


class SkipLSTM(nn.Module):
    """A unidirectional LSTM over the frames of [B, D, T] plus the input (skip).

    ``step(x, state)`` carries the recurrent state across consecutive pieces of a long
    sequence: the outputs equal those of one call on the whole sequence. The state is
    batch-first: (h, c), each [B, layers, D].
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x, None)[0]

    def step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        seq = x.permute(2, 0, 1)  # [T, B, D]
        if state is not None:
            state = (state[0].transpose(0, 1).contiguous(),
                     state[1].transpose(0, 1).contiguous())
        y, (h, c) = self.lstm(seq, state)
        return (y + seq).permute(1, 2, 0), (h.transpose(0, 1), c.transpose(0, 1))


def checked_shape(channels: int, ratios: tuple[int, ...]) -> tuple[int, ...]:
    """A network's ``ratios`` as a tuple of ints, after checking them and ``channels``
    (ValueError naming the bad value): 1 or 2 channels, 1 to 8 ratios in 1..64."""
    ratios = tuple(int(r) for r in ratios)
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if not ratios or min(ratios) < 1 or max(ratios) > 64 or len(ratios) > 8:
        raise ValueError(f"ratios must be 1 to 8 integers in 1..64, got {ratios}")
    return ratios


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrization under ``module`` by the plain weight it
    computes (inference: same output, one less operation per call). In place."""
    for child in module.modules():
        if parametrize.is_parametrized(child, "weight"):
            parametrize.remove_parametrizations(child, "weight", leave_parametrized=True)
    return module


def context_frames(layers: nn.Module, samples_per_frame: float) -> int:
    """Frames of context on each side beyond which the layers' output for a frame does not
    depend on the input (a conservative bound, used to cut long inputs into pieces).

    ``samples_per_frame`` is what one frame spans at the layers' input: the hop length
    for an encoder, 1 for a decoder (whose transposed convolutions divide it by their
    stride as they go).
    """
    reach, scale = 0.0, float(samples_per_frame)
    for layer in layers.modules():
        if isinstance(layer, Conv1d):
            reach += (layer.kernel - 1) / scale
            scale /= layer.stride
        elif isinstance(layer, ConvTranspose1d):
            reach += math.ceil(layer.kernel / layer.stride) / scale
            scale *= layer.stride
    return math.ceil(reach) + 1


__all__ = ["ACTIVATIONS", "Activation", "Conv1d", "ConvTranspose1d", "LSTMState",
           "ResidualUnit", "SkipLSTM", "Snake", "activation", "checked_shape", "context_frames",
           "conv_padding", "fold_weight_norm", "pad1d", "snake", "transposed_trim"]
