"""The faster CPU inference path of the SEANet convolution stages: time-major layout
[B, L, C], weights rearranged once into a :class:`TimeMajorPlan`.

On a CPU the convolutions near the waveform (few channels, hundreds of thousands of
steps) are slow in oneDNN's channels-first kernels. In time-major layout a convolution is
a few large matrix products on views of the input, with no copy: tap ``j`` of a
stride-1 convolution is ``x[:, j*d : j*d + L_out] @ W_j``; a strided convolution with
kernel ``m * s`` reshapes ``x`` to [B, L/s, s*C] (free) and sums ``m`` block taps. Same
result as the module's forward up to float rounding; no gradient (inference only).

A residual unit (identity skip) runs a block of rows at a time, fused with the
activation after it when there is one: its activations, hidden channels and sum stay in
the cache, and only its output goes to memory, with the padding of the convolution that
follows already in place (no padded copy). The rows of a block near an end of the
sequence are gathered with the same padding as the layers' own, so that the result does
not depend on the block size. A transposed convolution makes one product per block of
output rows, of the frames that reach each row gathered side by side. The blocks reuse
buffers allocated once per layer: on a virtual machine each fresh 4 KiB page of a new
buffer costs a fault that takes longer than the arithmetic done on it.

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

# Blocked layers run blocks of about this many bytes of rows (L2-sized) at a time.
BLOCK_BYTES = 1 << 20


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
    """The weight of a transposed convolution of kernel ``m * s`` as [m * C_in, s * C_out]:
    output row t (its s samples, columns (sample, C_out)) is the product of input frames
    t - m + 1 .. t side by side (rows (frame, C_in)) with this matrix."""
    weight = layer.conv.weight.detach()  # [C_in, C_out, k], tap j = block * s + sample
    c_in, c_out, kernel = weight.shape
    blocks = kernel // layer.stride
    by_block = weight.permute(0, 2, 1).reshape(c_in, blocks, layer.stride * c_out)
    return by_block.flip(1).transpose(0, 1).reshape(blocks * c_in, -1).contiguous()


def supports(layer: Conv1d) -> bool:
    kernel, stride = layer.conv.kernel_size[0], layer.stride
    return stride == 1 or (layer.conv.dilation[0] == 1 and kernel % stride == 0)


def _pad(x: Tensor, left: int, right: int, mode: str) -> Tensor:
    """``mode`` padding along the time axis of [B, L, C], its rows as :func:`_reflected`
    gives them (reflect needs L > max(left, right))."""
    if left == right == 0:
        return x
    length = x.shape[1]
    return torch.cat([_reflected(x, -left, 0, mode), x,
                      _reflected(x, length, length + right, mode)], dim=1)


def conv(layer: Conv1d, x: Tensor, taps: Tensor, padded: bool = False) -> Tensor:
    """``layer`` applied to time-major x [B, L, C_in] -> [B, L_out, C_out], with its
    weight as :func:`conv_taps` gives it. ``padded``: x already holds the layer's padding
    (as :func:`residual_unit` writes it)."""
    if not padded:
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
    :func:`transposed_taps` gives it: one product per block of output rows, of the
    ``k / s`` frames that reach each row side by side (gathered in a buffer in the cache;
    frames before the first and after the last are zeros)."""
    stride, kernel = layer.stride, layer.kernel
    batch, frames, c_in = x.shape
    blocks = kernel // stride
    total = frames + blocks - 1
    out = x.new_empty(batch, total, taps.shape[-1])
    # blocks of at least half as many rows as the weights have: the weights, read once
    # per block, stay within a few times the block's own rows
    rows = min(total, max(BLOCK_BYTES // (4 * taps.shape[0]), taps.shape[0] // 2, 16))
    gathered = x.new_empty(batch, rows, blocks, c_in)
    bias = layer.conv.bias.detach().repeat(stride)
    for r0 in range(0, total, rows):
        r1 = min(r0 + rows, total)
        window = _reflected(x, r0 - blocks + 1, r1, "constant")  # [B, n + blocks - 1, C_in]
        cols = gathered[:, : r1 - r0]
        cols.copy_(window.unfold(1, blocks, 1).transpose(2, 3))
        for b in range(batch):
            torch.addmm(bias, cols[b].view(r1 - r0, -1), taps, out=out[b, r0:r1])
    out = out.view(batch, -1, taps.shape[-1] // stride)
    left, right = layer.trim
    return out[:, left : out.shape[1] - right]


def _activate_into(act: nn.Module, x: Tensor, out: Tensor, scratch: Tensor) -> Tensor:
    """``act`` (ELU or Snake) of x written to ``out`` (x itself allowed), with ``scratch``
    (at least x's size) to work in. ELU (alpha 1) as max(x, exp(min(x, 0)) - 1): four
    passes over cached rows, faster than torch's ELU kernel (expm1) and within 1e-7 of it."""
    if isinstance(act, nn.ELU) and act.alpha == 1.0:
        below = scratch[: x.numel()].view(x.shape)
        torch.clamp(x, max=0.0, out=below).exp_().sub_(1.0)
        return torch.maximum(x, below, out=out)
    if isinstance(act, nn.ELU):
        return out.copy_(F.elu(x, act.alpha))
    return out.copy_(snake(x, act.alpha.detach().view(1, 1, -1)))


def fusable(unit: nn.Module, x: Tensor) -> bool:
    """Whether :func:`residual_unit` computes ``unit`` on x [B, L, C]: an identity skip,
    ELU or Snake activations, stride-1 convolutions with a padding shorter than x."""
    if not isinstance(unit, ResidualUnit) or not isinstance(unit.shortcut, nn.Identity):
        return False
    act, inner, act2, outer = unit.block
    if not all(isinstance(a, (nn.ELU, Snake)) for a in (act, act2)):
        return False
    if not (isinstance(inner, Conv1d) and isinstance(outer, Conv1d)) or outer.kernel != 1:
        return False
    return inner.stride == outer.stride == 1 and x.shape[1] > inner.kernel


def _reflected(x: Tensor, start: int, stop: int, mode: str) -> Tensor:
    """Rows ``start .. stop`` of x [B, L, C] where rows before 0 and from L on are the
    padding of ``mode`` (reflect: row -i is row i, row L-1+i is row L-1-i; replicate: the
    end rows; constant: zeros)."""
    length = x.shape[1]
    if 0 <= start and stop <= length:
        return x[:, start:stop]
    index = torch.arange(start, stop, device=x.device)
    if mode == "reflect":
        index = index.abs()
        return x[:, torch.where(index >= length, 2 * (length - 1) - index, index)]
    if mode == "replicate":
        return x[:, index.clamp(0, length - 1)]
    out = x.new_zeros(x.shape[0], stop - start, x.shape[2])
    inside = (index >= 0) & (index < length)
    out[:, inside] = x[:, index[inside]]
    return out


def residual_unit(unit: ResidualUnit, x: Tensor, taps: Taps, after: nn.Module | None = None,
                  pad: tuple[int, int, str] = (0, 0, "constant")) -> Tensor:
    """``unit`` (see :func:`fusable`) and then the activation ``after`` on x [B, L, C],
    one block of rows at a time in buffers allocated once (a fresh buffer costs a page
    fault per 4 KiB); the result comes with ``pad`` = (left, right, mode) rows of padding
    around its L rows, as the next convolution needs them."""
    act, inner, act2, outer = unit.block
    k_taps, o_taps = taps(inner), taps(outer)[0]
    dilation, bias = inner.conv.dilation[0], inner.conv.bias.detach()
    left, right = conv_padding(x.shape[1], inner.kernel, 1, inner.causal)
    batch, length, channels = x.shape
    before, behind, mode = pad
    out = x.new_empty(batch, before + length + behind, channels)
    # blocks of at least 4 rows per channel: the unit's weights (about 2 C^2 values for a
    # kernel of 3), read once per block, stay a fraction of the block's rows
    rows = min(length, max(BLOCK_BYTES // (4 * channels), 4 * channels, 64))
    hidden_rows = x.new_empty(batch, rows + left + right, channels)
    scratch = x.new_empty(hidden_rows.numel())
    y_rows = x.new_empty(batch, rows, k_taps.shape[-1])
    for start in range(0, length, rows):
        stop = min(start + rows, length)
        n = stop - start
        window = _reflected(x, start - left, stop + right, inner.pad_mode)
        hidden = _activate_into(act, window, hidden_rows[:, : window.shape[1]], scratch)
        y = y_rows[:, :n]
        for b in range(batch):
            torch.addmm(bias, hidden[b, :n], k_taps[0], out=y[b])
            for j in range(1, k_taps.shape[0]):
                y[b].addmm_(hidden[b, j * dilation : j * dilation + n], k_taps[j])
        _activate_into(act2, y, y, scratch)
        block = out[:, before + start : before + stop]
        for b in range(batch):
            torch.addmm(x[b, start:stop], y[b], o_taps, out=block[b])
        block += outer.conv.bias.detach()
        if after is not None:
            _activate_into(after, block, block, scratch)
    if before or behind:
        body = out[:, before : before + length]
        out[:, :before] = _reflected(body, -before, 0, mode)
        out[:, before + length :] = _reflected(body, length, length + behind, mode)
    return out


def run(layers: Sequence[nn.Module], x: Tensor, taps: Taps, *, owned: bool = False
        ) -> Tensor:
    """Apply a sequence of Conv1d, ELU, Snake and ResidualUnit layers to time-major x, with the
    rearranged weights of each convolution from ``taps(layer)``.

    ``owned``: x may be overwritten (activations then run in place, which avoids mapping
    a fresh large buffer per layer)."""
    layers = list(layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        i += 1
        if fusable(layer, x):
            after = (layers[i] if i < len(layers) and isinstance(layers[i], (nn.ELU, Snake))
                     else None)
            i += after is not None
            following = layers[i] if i < len(layers) else None
            if (isinstance(following, Conv1d) and supports(following)
                    and x.shape[1] > following.kernel):
                left, right = conv_padding(x.shape[1], following.kernel, following.stride,
                                           following.causal)
                x = residual_unit(layer, x, taps, after, (left, right, following.pad_mode))
                x, owned, i = conv(following, x, taps(following), padded=True), True, i + 1
            else:
                x, owned = residual_unit(layer, x, taps, after), True
            continue
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
