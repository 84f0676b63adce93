"""Pointwise layers: ELU (EnCodec), Snake (DAC's periodic activation), tanh, identity.

A pointwise layer has no reach, streams as it is, and runs on time-major rows by the
same elementwise function; :meth:`Pointwise.activate_into` is the form the fused
time-major kernels call (into a buffer they own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.runtime.layer import Layer, WeightCache

Activation = Literal["elu", "snake"]
ACTIVATIONS = ("elu", "snake")


class Pointwise(Layer):
    """A layer applied to each value (or each value of a channel) alone."""

    def reach(self, scale: float) -> tuple[float, float]:
        return 0.0, scale

    @property
    def causal(self) -> bool:
        return True

    def rows(self, x: Tensor, inplace: bool) -> Tensor:
        """The function on time-major rows [B, L, C] (in place when ``inplace``)."""
        return self(x.transpose(1, 2)).transpose(1, 2)

    def activate_into(self, x: Tensor, out: Tensor, scratch: Tensor) -> Tensor:
        """The function of time-major x written to ``out`` (x itself allowed), with
        ``scratch`` (at least x's size) to work in."""
        return out.copy_(self.rows(x, False))

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        return self.rows(x, owned), 0


class Identity(Pointwise):
    def forward(self, x: Tensor) -> Tensor:
        return x

    def rows(self, x: Tensor, inplace: bool) -> Tensor:
        return x


class ELU(Pointwise, nn.ELU):
    """EnCodec's activation (``torch.nn.ELU``, alpha 1 unless given)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def rows(self, x: Tensor, inplace: bool) -> Tensor:
        return F.elu_(x, self.alpha) if inplace else F.elu(x, self.alpha)

    def activate_into(self, x: Tensor, out: Tensor, scratch: Tensor) -> Tensor:
        """As max(x, exp(min(x, 0)) - 1): four passes over cached rows, faster than
        torch's ELU kernel (expm1) and within 1e-7 of it."""
        if self.alpha != 1.0:
            return out.copy_(self.rows(x, False))
        below = scratch[: x.numel()].view(x.shape)
        torch.clamp(x, max=0.0, out=below).exp_().sub_(1.0)
        return torch.maximum(x, below, out=out)


def snake(x: Tensor, alpha: Tensor, eps: float = 1e-9) -> Tensor:
    """The Snake activation of DAC, ``x + sin(alpha x)**2 / alpha`` (``alpha`` broadcast
    against ``x``): periodic bumps of height ``1 / alpha`` on the identity."""
    return x + torch.sin(alpha * x).pow(2) / (alpha + eps)


class Snake(Pointwise):
    """:func:`snake` with a learned ``alpha`` per channel (initially 1), on [B, C, L]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return snake(x, self.alpha)

    def rows(self, x: Tensor, inplace: bool) -> Tensor:
        return snake(x, self.alpha.detach().view(1, 1, -1))


class Tanh(Pointwise):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def rows(self, x: Tensor, inplace: bool) -> Tensor:
        return x.tanh_() if inplace else torch.tanh(x)


def activation(kind: Activation, channels: int) -> Pointwise:
    """ELU (EnCodec) or Snake (DAC) for ``channels`` channels."""
    if kind == "elu":
        return ELU()
    if kind == "snake":
        return Snake(channels)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


__all__ = ["ACTIVATIONS", "ELU", "Activation", "Identity", "Pointwise", "Snake", "Tanh",
           "activation", "snake"]
