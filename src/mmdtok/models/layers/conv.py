"""EnCodec's padded convolution and trimmed transposed convolution, with weight norm,
for every runtime (whole, time-major, chunked, streamed, exported).

The padding follows EnCodec exactly (so that published weights give the same output):
a convolution of effective kernel ``k`` and stride ``s`` pads ``k - s`` samples in
total (all on the left when causal, split with the extra sample on the left otherwise),
plus what the last frame needs on the right, so that ``L`` samples give ``ceil(L / s)``
frames.

Streaming (causal layers only): a convolution keeps the last ``kernel - stride`` rows of
its input, a transposed convolution the overlapping tail of its output. A convolution
that pads by reflection reflects its first samples, so its first output waits until
``kernel - stride + 1`` samples are in; zero or replicate padding starts at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.runtime.kernels import (
    conv_rows,
    conv_taps,
    conv_transpose_rows,
    pad_rows,
    transposed_taps,
)
from mmdtok.models.runtime.layer import (
    Layer,
    NotStreamable,
    Streamer,
    WeightCache,
    nothing,
)

PadMode = Literal["reflect", "constant", "replicate"]
Norm = Literal["weight_norm", "none"]


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


def normalized(conv: nn.Module, norm: Norm) -> nn.Module:
    """``conv`` under weight norm ("weight_norm") or as it is ("none")."""
    if norm == "weight_norm":
        return nn.utils.parametrizations.weight_norm(conv)
    if norm != "none":
        raise ValueError(f"norm must be 'weight_norm' or 'none', got {norm!r}")
    return conv


def _bias(conv: nn.Module) -> Tensor | None:
    return conv.bias.detach() if conv.bias is not None else None


class Conv1d(Layer):
    """A convolution that pads its input as EnCodec does ([B, C, L] -> [B, C', ceil(L/s)]).

    ``conv`` holds the weights (under a weight-norm parametrization when ``norm`` is
    "weight_norm"; :func:`~mmdtok.models.layers.fold_weight_norm` removes it).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, *, causal: bool = False,
                 pad_mode: PadMode = "reflect", norm: Norm = "weight_norm") -> None:
        super().__init__()
        self.conv = normalized(nn.Conv1d(in_channels, out_channels, kernel_size, stride,
                                         dilation=dilation), norm)
        self.kernel = (kernel_size - 1) * dilation + 1
        self.stride, self.pad_mode = stride, pad_mode
        self.is_causal = causal

    @property
    def causal(self) -> bool:
        return self.is_causal

    @property
    def dilation(self) -> int:
        return self.conv.dilation[0]

    def padding(self, length: int) -> tuple[int, int]:
        """(left, right) padding of an input of ``length`` samples."""
        return conv_padding(length, self.kernel, self.stride, self.is_causal)

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.padding(x.shape[-1])
        return self.conv(pad1d(x, left, right, self.pad_mode))

    def reach(self, scale: float) -> tuple[float, float]:
        return (self.kernel - 1) / scale, scale / self.stride

    def accepts(self, length: int) -> bool:
        return length >= 2 and (self.pad_mode != "reflect"
                                or length > max(self.padding(length)))

    def fast(self) -> bool:
        """Whether the time-major kernel computes this convolution."""
        return self.stride == 1 or (self.dilation == 1 and self.kernel % self.stride == 0)

    def taps(self, plan: WeightCache | None) -> Tensor:
        weight = self.conv.weight
        if plan is None:
            return conv_taps(weight, self.stride)
        return plan.get(self, weight, lambda: conv_taps(weight, self.stride))

    def on_padded_rows(self, x: Tensor, plan: WeightCache | None) -> Tensor:
        """The convolution of time-major rows that already hold its padding."""
        return conv_rows(x, self.taps(plan), _bias(self.conv), self.kernel, self.stride,
                         self.dilation)

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        left, right = self.padding(x.shape[1])
        if not self.fast() or (self.pad_mode == "reflect" and x.shape[1] <= max(left, right)):
            return super().time_major(x, plan, following, owned)
        return self.on_padded_rows(pad_rows(x, left, right, self.pad_mode), plan), 0

    def streamer(self) -> Streamer:
        if not self.is_causal:
            raise NotStreamable("a centred convolution looks ahead by half its kernel")
        return _ConvStreamer(self)


class _ConvStreamer(Streamer):
    """Left padding ``kernel - stride`` (reflected, replicated or zeros, as the layer
    pads), then every window that fits; the rows not yet consumed wait for the next."""

    def __init__(self, layer: Conv1d) -> None:
        super().__init__(layer)
        self.conv = layer
        self.taps = layer.taps(None) if layer.fast() else None
        self.left = layer.kernel - layer.stride
        self.need = self.left + 1 if layer.pad_mode == "reflect" else 1  # rows to start
        self.buf: Tensor | None = None  # padded input not yet consumed
        self.raw: list[Tensor] = []  # input before the start
        self.length = 0  # input rows seen
        self.emitted = 0  # output rows emitted

    def count(self, n: int) -> int:
        return n // self.conv.stride if n >= self.need else 0

    def _run(self) -> Tensor:
        layer = self.conv
        assert self.buf is not None
        frames = (self.buf.shape[1] - layer.kernel) // layer.stride + 1
        if frames <= 0:
            return nothing()
        if self.taps is not None:
            out = conv_rows(self.buf, self.taps, _bias(layer.conv), layer.kernel,
                            layer.stride, layer.dilation)
        else:
            out = layer.conv(self.buf.transpose(1, 2)).transpose(1, 2)
        self.buf = self.buf[:, frames * layer.stride :]
        self.emitted += frames
        return out

    def _padded(self, x: Tensor, left: int, right: int) -> Tensor:
        return pad1d(x.transpose(1, 2), left, right, self.conv.pad_mode).transpose(1, 2)

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return nothing()
        self.length += x.shape[1]
        if self.buf is None:
            self.raw.append(x)
            if self.length < self.need:
                return nothing()
            raw = torch.cat(self.raw, 1) if len(self.raw) > 1 else self.raw[0]
            self.raw = []
            self.buf = self._padded(raw, self.left, 0)
        else:
            self.buf = torch.cat([self.buf, x], 1) if self.buf.shape[1] else x
        return self._run()

    def flush(self) -> Tensor:
        stride = self.conv.stride
        total = math.ceil(self.length / stride)
        extra = total * stride - self.length
        if self.buf is None:  # shorter than the padding: padded at once, as the whole pass
            if not self.length:
                return nothing()
            self.buf = self._padded(torch.cat(self.raw, 1), self.left, extra)
        elif extra:
            self.buf = self._padded(self.buf, 0, extra)
        return self._run() if total > self.emitted else nothing()


class ConvTranspose1d(Layer):
    """A transposed convolution trimmed as EnCodec does ([B, C, T] -> [B, C', T * s])."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, *, causal: bool = False, trim_right_ratio: float = 1.0,
                 norm: Norm = "weight_norm") -> None:
        super().__init__()
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1 only makes sense for causal convolutions")
        self.conv = normalized(nn.ConvTranspose1d(in_channels, out_channels, kernel_size,
                                                  stride), norm)
        self.kernel, self.stride, self.is_causal = kernel_size, stride, causal
        self.trim = transposed_trim(kernel_size, stride, causal, trim_right_ratio)

    @property
    def causal(self) -> bool:
        return self.is_causal

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]

    def reach(self, scale: float) -> tuple[float, float]:
        return math.ceil(self.kernel / self.stride) / scale, scale * self.stride

    def taps(self, plan: WeightCache | None) -> Tensor:
        weight = self.conv.weight
        if plan is None:
            return transposed_taps(weight, self.stride)
        return plan.get(self, weight, lambda: transposed_taps(weight, self.stride))

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        if self.kernel % self.stride:
            return super().time_major(x, plan, following, owned)
        out = conv_transpose_rows(x, self.taps(plan), _bias(self.conv), self.kernel,
                                  self.stride)
        left, right = self.trim
        return out[:, left : out.shape[1] - right], 0

    def streamer(self) -> Streamer:
        if not self.is_causal:
            raise NotStreamable("a centred transposed convolution trims ahead")
        return _ConvTransposeStreamer(self)


class _ConvTransposeStreamer(Streamer):
    """Overlap-add: each input row's ``kernel`` output rows are added to the tail the
    earlier rows left; the rows no later input reaches are emitted, the layer's trims
    applied to the whole."""

    def __init__(self, layer: ConvTranspose1d) -> None:
        super().__init__(layer)
        self.stride, self.kernel = layer.stride, layer.kernel
        self.blocks = -(-layer.kernel // layer.stride)
        weight = layer.conv.weight.detach()  # [C_in, C_out, k]
        c_in, c_out, k = weight.shape
        padded = F.pad(weight, (0, self.blocks * self.stride - k))
        self.weight = padded.permute(0, 2, 1).reshape(c_in, -1).contiguous()  # [C_in, (k, C_out)]
        self.c_out = c_out
        self.bias = _bias(layer.conv)
        self.trim_start, self.right = layer.trim
        self.skip = self.trim_start
        self.tail: Tensor | None = None  # [B, blocks - 1, s, C_out] partial sums

    def count(self, n: int) -> int:
        return max(0, n * self.stride - self.trim_start)

    def _finish(self, y: Tensor) -> Tensor:
        if self.bias is not None:
            y = y + self.bias
        if self.skip:
            cut = min(self.skip, y.shape[1])
            self.skip -= cut
            y = y[:, cut:]
        return y if y.shape[1] else nothing()

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return nothing()
        batch, n, _ = x.shape
        s, m = self.stride, self.blocks
        parts = torch.matmul(x, self.weight).view(batch, n, m, s, self.c_out)
        # output block t (s rows) sums parts[t - b, b] over b; blocks t >= n wait
        out = parts.new_zeros(batch, n + m - 1, s, self.c_out)
        for b in range(m):
            out[:, b : b + n] += parts[:, :, b]
        if self.tail is not None:
            out[:, : m - 1] += self.tail
        self.tail = out[:, n:]
        return self._finish(out[:, :n].reshape(batch, n * s, self.c_out))

    def flush(self) -> Tensor:
        if self.tail is None:
            return nothing()
        batch = self.tail.shape[0]
        rows = self.tail.reshape(batch, -1, self.c_out)[:, : self.kernel - self.stride]
        return self._finish(rows[:, : rows.shape[1] - self.right])


__all__ = ["Conv1d", "ConvTranspose1d", "Norm", "PadMode", "conv_padding", "normalized",
           "pad1d", "transposed_trim"]
