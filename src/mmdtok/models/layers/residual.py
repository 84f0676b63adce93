"""SEANet's residual unit, ``x + f(x)``, for every runtime.

Time-major, a unit with an identity skip runs a block of rows at a time, fused with the
activation after it when there is one: its activations, hidden channels and sum stay in
the cache, and only its output goes to memory, with the padding of the convolution that
follows already in place (no padded copy). The rows of a block near an end of the
sequence are gathered with the same padding as the layers' own, so that the result does
not depend on the block size.

Streaming: the block's output lags the skip's at the start when its convolutions wait
for samples to reflect, so both branches queue until they are aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmdtok.models.layers.activations import Activation, Identity, Pointwise, activation
from mmdtok.models.layers.conv import Conv1d
from mmdtok.models.runtime import kernels
from mmdtok.models.runtime.kernels import reflected
from mmdtok.models.runtime.layer import (
    Layer,
    SequenceStreamer,
    Streamer,
    WeightCache,
    cat_rows,
    nothing,
    run_time_major,
)


class ResidualUnit(Layer):
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
        self.shortcut = Conv1d(dim, dim, 1, **conv_args) if conv_shortcut else Identity()

    def sublayers(self) -> list[Layer]:
        return list(self.block)  # the skip adds no reach

    @property
    def causal(self) -> bool:
        return self.shortcut.causal and all(layer.causal for layer in self.block)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.block:
            y = layer(y)
        return self.shortcut(x) + y

    def streamer(self) -> Streamer:
        return _ResidualStreamer(self)

    def fusable(self, x: Tensor) -> bool:
        """Whether the fused kernel computes the unit on x [B, L, C]: an identity skip,
        stride-1 convolutions (the second 1x1) with a padding shorter than x."""
        _, inner, _, outer = self.block
        if not isinstance(self.shortcut, Identity) or outer.kernel != 1:
            return False
        return inner.stride == outer.stride == 1 and x.shape[1] > inner.kernel

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        if not self.fusable(x):
            skip = self.shortcut.time_major(x, plan, ())[0]
            return run_time_major(self.block, x, plan).add_(skip), 0
        after = following[0] if following and isinstance(following[0], Pointwise) else None
        rest = following[1:] if after is not None else following
        nxt = rest[0] if rest else None
        if isinstance(nxt, Conv1d) and nxt.fast() and x.shape[1] > nxt.kernel:
            left, right = nxt.padding(x.shape[1])
            y = self._fused(x, plan, after, (left, right, nxt.pad_mode))
            return nxt.on_padded_rows(y, plan), 1 + (after is not None)
        return self._fused(x, plan, after), int(after is not None)

    def _fused(self, x: Tensor, plan: WeightCache | None, after: Pointwise | None,
               pad: tuple[int, int, str] = (0, 0, "constant")) -> Tensor:
        """The unit and then ``after`` on x [B, L, C], one block of rows at a time in
        buffers allocated once; the result comes with ``pad`` = (left, right, mode) rows
        of padding around its L rows, as the next convolution needs them."""
        act, inner, act2, outer = self.block
        k_taps, o_taps = inner.taps(plan), outer.taps(plan)[0]
        dilation, bias = inner.dilation, inner.conv.bias.detach()
        left, right = inner.padding(x.shape[1])
        batch, length, channels = x.shape
        before, behind, mode = pad
        out = x.new_empty(batch, before + length + behind, channels)
        # blocks of at least 4 rows per channel: the unit's weights (about 2 C^2 values
        # for a kernel of 3), read once per block, stay a fraction of the block's rows
        rows = min(length, max(kernels.BLOCK_BYTES // (4 * channels), 4 * channels, 64))
        hidden_rows = x.new_empty(batch, rows + left + right, channels)
        scratch = x.new_empty(hidden_rows.numel())
        y_rows = x.new_empty(batch, rows, k_taps.shape[-1])
        for start in range(0, length, rows):
            stop = min(start + rows, length)
            n = stop - start
            window = reflected(x, start - left, stop + right, inner.pad_mode)
            hidden = act.activate_into(window, hidden_rows[:, : window.shape[1]], scratch)
            y = y_rows[:, :n]
            for b in range(batch):
                torch.addmm(bias, hidden[b, :n], k_taps[0], out=y[b])
                for j in range(1, k_taps.shape[0]):
                    y[b].addmm_(hidden[b, j * dilation : j * dilation + n], k_taps[j])
            act2.activate_into(y, y, scratch)
            block = out[:, before + start : before + stop]
            for b in range(batch):
                torch.addmm(x[b, start:stop], y[b], o_taps, out=block[b])
            block += outer.conv.bias.detach()
            if after is not None:
                after.activate_into(block, block, scratch)
        if before or behind:
            body = out[:, before : before + length]
            out[:, :before] = reflected(body, -before, 0, mode)
            out[:, before + length :] = reflected(body, length, length + behind, mode)
        return out


class _ResidualStreamer(Streamer):
    """``shortcut(x) + block(x)``, each branch queued until the other has its rows."""

    def __init__(self, unit: ResidualUnit) -> None:
        super().__init__(unit)
        self.block = SequenceStreamer([layer.streamer() for layer in unit.block])
        self.shortcut = unit.shortcut.streamer()
        self.pending = [nothing(), nothing()]

    def count(self, n: int) -> int:
        return min(self.shortcut.count(n), self.block.count(n))

    def _emit(self, short: Tensor, long: Tensor) -> Tensor:
        a, b = self.pending
        if not a.numel() and not b.numel() and short.shape == long.shape and short.numel():
            return long.add_(short)  # aligned (always, once started): no queue
        a, b = cat_rows([a, short]), cat_rows([b, long])
        n = min(a.shape[1] if a.numel() else 0, b.shape[1] if b.numel() else 0)
        if not n:
            self.pending = [a, b]
            return nothing()
        self.pending = [a[:, n:], b[:, n:]]
        return a[:, :n] + b[:, :n]

    def push(self, x: Tensor) -> Tensor:
        return self._emit(self.shortcut.push(x), self.block.push(x))

    def flush(self) -> Tensor:
        return self._emit(self.shortcut.flush(), self.block.flush())


__all__ = ["ResidualUnit"]
