"""Vocos' frame-rate layers: a layer norm over channels and the ConvNeXt block, for every
runtime (whole, time-major, chunked, exported).

The ConvNeXt block (Liu et al. 2022, in Vocos' 1-D form): a depthwise convolution of
kernel 7 with zero padding, a layer norm over channels, a pointwise expansion, GELU, a
pointwise projection back, a learned per-channel scale (layer scale), and the residual.
Both layers are centred (the depthwise convolution looks ahead by half its kernel), so
they do not stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.runtime.layer import Layer, NotStreamable, Streamer, WeightCache


class ChannelNorm(Layer):
    """Layer norm over the channels of [B, C, T] (each frame on its own: no reach)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        return self.norm(x), 0


class ConvNeXtBlock(Layer):
    """[B, C, T] -> [B, C, T]: ``x + gamma * pw2(gelu(pw1(norm(dwconv(x)))))``."""

    def __init__(self, dim: int, intermediate: int, kernel_size: int = 7,
                 layer_scale: float = 0.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred), got {kernel_size}")
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale > 0 \
            else None

    @property
    def kernel(self) -> int:
        return self.dwconv.kernel_size[0]

    def _pointwise(self, rows: Tensor) -> Tensor:
        """Everything after the depthwise convolution, on time-major rows [B, T, C]."""
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(rows))))
        return y * self.gamma if self.gamma is not None else y

    def forward(self, x: Tensor) -> Tensor:
        return x + self._pointwise(self.dwconv(x).transpose(1, 2)).transpose(1, 2)

    def reach(self, scale: float) -> tuple[float, float]:
        return (self.kernel // 2) / scale, scale

    @property
    def causal(self) -> bool:
        return False

    def streamer(self) -> Streamer:
        raise NotStreamable("a ConvNeXt block's depthwise convolution looks ahead by half "
                            "its kernel")

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        """The depthwise convolution as ``kernel`` shifted multiply-adds on the rows (no
        transpose), then the pointwise part where the rows already are."""
        half, length = self.kernel // 2, x.shape[1]
        padded = F.pad(x, (0, 0, half, half))
        weight = self.dwconv.weight[:, 0]  # [C, k]
        mixed = torch.addcmul(self.dwconv.bias, padded[:, 0:length], weight[:, 0])
        for tap in range(1, self.kernel):
            mixed.addcmul_(padded[:, tap : tap + length], weight[:, tap])
        out = self._pointwise(mixed)
        return out.add_(x) if not x.requires_grad else out + x, 0


__all__ = ["ChannelNorm", "ConvNeXtBlock"]
