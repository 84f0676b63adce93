"""The faster CPU inference path of the SEANet convolution stages: time-major layout
[B, L, C], weights rearranged once into a :class:`TimeMajorPlan`.

On a CPU the convolutions near the waveform (few channels, hundreds of thousands of
steps) are slow in oneDNN's channels-first kernels. In time-major layout a convolution is
a few large matrix products on views of the input, with no copy: tap ``j`` of a
stride-1 convolution is ``x[:, j*d : j*d + L_out] @ W_j``; a strided convolution with
kernel ``m * s`` reshapes ``x`` to [B, L/s, s*C] (free) and sums ``m`` block taps. Same
result as the module's forward up to float rounding; no gradient (inference only).

A plan holds its rearranged weights itself (nothing is stored on the layers) and
rebuilds a layer's when that layer's weight changed since (a new tensor, or an in-place
update such as ``load_state_dict``). :meth:`CodecModel.for_inference
<mmdtok.models.codec.CodecModel.for_inference>` prepares the plans; training mode drops
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.layers import (
    Conv1d,
    ConvTranspose1d,
    ResidualUnit,
    Snake,
    conv_padding,
    snake,
)

# Stride-1 convolutions with at most this many (input channel, tap) pairs run as one
# product on a window view (im2col), not one product per tap.
SMALL_IM2COL = 32


Taps = Callable[[nn.Module], Tensor]


def conv_taps(layer: Conv1d) -> Tensor:
    """The weight of a convolution as [taps, rows per tap, C_out]: [k, C_in, C_out] for
    stride 1; for stride s, block tap m covers kernel positions m*s .. m*s+s-1, rows
    (position, C_in)."""
    weight = layer.conv.weight.detach()  # [C_out, C_in, k]
    c_out, c_in, k = weight.shape
    stride = layer.stride
    if stride == 1:
        return weight.permute(2, 1, 0).contiguous()
    return weight.permute(2, 1, 0).reshape(k // stride, stride * c_in, c_out).contiguous()


def transposed_taps(layer: ConvTranspose1d) -> Tensor:
    """The weight of a transposed convolution as [C_in, k * C_out], columns (tap, C_out)."""
    weight = layer.conv.weight.detach()  # [C_in, C_out, k]
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1).contiguous()


def supports(layer: Conv1d) -> bool:
    kernel, stride = layer.conv.kernel_size[0], layer.stride
    return stride == 1 or (layer.conv.dilation[0] == 1 and kernel % stride == 0)


def _pad(x: Tensor, left: int, right: int, mode: str) -> Tensor:
    """Reflect (or zero) padding along the time axis of [B, L, C]."""
    if left == right == 0:
        return x
    if mode == "reflect" and x.shape[1] > max(left, right):
        parts = [x[:, 1 : left + 1].flip(1), x, x[:, -right - 1 : -1].flip(1)]
        return torch.cat([p for p in parts if p.shape[1]], dim=1)
    channels_first = F.pad(x.transpose(1, 2), (left, right), mode=mode)
    return channels_first.transpose(1, 2).contiguous()


def conv(layer: Conv1d, x: Tensor, taps: Tensor) -> Tensor:
    """``layer`` applied to time-major x [B, L, C_in] -> [B, L_out, C_out], with its
    weight as :func:`conv_taps` gives it."""
    left, right = conv_padding(x.shape[1], layer.kernel, layer.stride, layer.causal)
    if layer.pad_mode == "reflect" and x.shape[1] <= max(left, right):
        return layer(x.transpose(1, 2)).transpose(1, 2).contiguous()
    x = _pad(x, left, right, layer.pad_mode)
    stride, dilation = layer.stride, layer.conv.dilation[0]
    batch, length, channels = x.shape
    out_len = (length - layer.kernel) // stride + 1
    bias = layer.conv.bias.detach()
    if stride == 1 and channels * taps.shape[0] <= SMALL_IM2COL:  # e.g. the first conv
        windows = x.unfold(1, layer.kernel, 1)[..., ::dilation]  # [B, L_out, C, k]
        flat = windows.transpose(2, 3).reshape(batch, out_len, -1)
        return torch.matmul(flat, taps.reshape(-1, taps.shape[-1])).add_(bias)
    if stride == 1:
        views = [x[:, j * dilation : j * dilation + out_len] for j in range(taps.shape[0])]
    else:
        blocks = x[:, : length - length % stride].reshape(batch, length // stride,
                                                         stride * channels)
        views = [blocks[:, m : m + out_len] for m in range(taps.shape[0])]
    out = x.new_empty(batch, out_len, taps.shape[-1])
    for b in range(batch):
        torch.addmm(bias, views[0][b], taps[0], out=out[b])
        for view, tap in zip(views[1:], taps[1:]):
            out[b].addmm_(view[b], tap)
    return out


def conv_transpose(layer: ConvTranspose1d, x: Tensor, taps: Tensor) -> Tensor:
    """``layer`` on time-major x [B, T, C_in] -> [B, T * s, C_out] with its weight as
    :func:`transposed_taps` gives it: one product gives every frame's k output samples,
    and ``k / s`` shifted block sums overlap-add them."""
    stride, kernel = layer.stride, layer.kernel
    batch, frames, _ = x.shape
    blocks = kernel // stride
    spread = torch.matmul(x, taps).view(batch, frames, blocks, stride, -1)
    out = spread.new_zeros(batch, frames + blocks - 1, stride, spread.shape[-1])
    for m in range(blocks):
        out[:, m : m + frames] += spread[:, :, m]
    out = out.view(batch, -1, spread.shape[-1]).add_(layer.conv.bias.detach())
    left, right = layer.trim
    return out[:, left : out.shape[1] - right]


def run(layers: Sequence[nn.Module], x: Tensor, taps: Taps, *, owned: bool = False
        ) -> Tensor:
    """Apply a sequence of Conv1d, ELU, Snake and ResidualUnit layers to time-major x, with the
    rearranged weights of each convolution from ``taps(layer)``.

    ``owned``: x may be overwritten (activations then run in place, which avoids mapping
    a fresh large buffer per layer)."""
    for layer in layers:
        if isinstance(layer, Conv1d) and supports(layer):
            x, owned = conv(layer, x, taps(layer)), True
        elif isinstance(layer, ConvTranspose1d) and layer.kernel % layer.stride == 0:
            x, owned = conv_transpose(layer, x, taps(layer)), True
        elif isinstance(layer, nn.ELU):
            x, owned = (F.elu_(x) if owned else F.elu(x)), True
        elif isinstance(layer, Snake):
            x, owned = snake(x, layer.alpha.detach().view(1, 1, -1)), True
        elif isinstance(layer, ResidualUnit):
            skip = (x if isinstance(layer.shortcut, nn.Identity)
                    else run([layer.shortcut], x, taps))
            x, owned = run(layer.block, x, taps).add_(skip), True
        else:
            x, owned = layer(x.transpose(1, 2)).transpose(1, 2).contiguous(), True
    return x


class TimeMajorPlan:
    """A stage's layers with their convolution weights rearranged for :func:`run`, kept
    here and rebuilt for a layer whose weight changed (another tensor, or a new version
    of the same one)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.layers = list(layers)
        self._taps: dict[int, tuple[Tensor, int, Tensor]] = {}

    def taps(self, layer: nn.Module) -> Tensor:
        weight = layer.conv.weight
        cached = self._taps.get(id(layer))
        if cached is None or cached[0] is not weight or cached[1] != weight._version:
            rearranged = (conv_taps(layer) if isinstance(layer, Conv1d)
                          else transposed_taps(layer))
            cached = (weight, weight._version, rearranged)
            self._taps[id(layer)] = cached
        return cached[2]

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """[B, C, L] -> [B, C', L'] through the layers, computed in time-major layout."""
        return run(self.layers, x.transpose(1, 2).contiguous(), self.taps).transpose(1, 2)
