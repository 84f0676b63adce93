"""Time-major kernels for the CPU: a convolution on rows [B, L, C] as a few large matrix
products on views of the input, with no copy.

On a CPU the convolutions near the waveform (few channels, hundreds of thousands of
steps) are slow in oneDNN's channels-first kernels. In time-major layout tap ``j`` of a
stride-1 convolution is ``x[:, j*d : j*d + L_out] @ W_j``; a strided convolution with
kernel ``m * s`` reshapes ``x`` to [B, L/s, s*C] (free) and sums ``m`` block taps; a
transposed convolution makes one product per block of output rows, of the frames that
reach each row side by side. The layers call these from their ``time_major`` and their
streamers (:mod:`mmdtok.models.layers`); the results equal the modules' forward up to
float rounding, without gradients (inference only).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Stride-1 convolutions with at most this many (input channel, tap) pairs run as one
# product on a window view (im2col), not one product per tap.
SMALL_IM2COL = 32

# A convolution with at most this many output rows in all (a streamed step) also runs as
# one product of its windows side by side: one pass over the weights, one call.
FEW_ROWS = 8

# Blocked kernels run blocks of about this many bytes of rows (L2-sized) at a time; the
# blocks reuse buffers allocated once per call: on a virtual machine each fresh 4 KiB
# page of a new buffer costs a fault that takes longer than the arithmetic done on it.
BLOCK_BYTES = 1 << 20


def conv_taps(weight: Tensor, stride: int) -> Tensor:
    """A convolution's weight [C_out, C_in, k] as [taps, rows per tap, C_out]: [k, C_in,
    C_out] for stride 1; for stride s, block tap m covers kernel positions m*s ..
    m*s+s-1, rows (position, C_in)."""
    weight = weight.detach()
    c_out, c_in, k = weight.shape
    if stride == 1:
        return weight.permute(2, 1, 0).contiguous()
    return weight.permute(2, 1, 0).reshape(k // stride, stride * c_in, c_out).contiguous()


def transposed_taps(weight: Tensor, stride: int) -> Tensor:
    """A transposed convolution's weight [C_in, C_out, m * s] as [m * C_in, s * C_out]:
    output row t (its s samples, columns (sample, C_out)) is the product of input frames
    t - m + 1 .. t side by side (rows (frame, C_in)) with this matrix."""
    weight = weight.detach()  # tap j = block * s + sample
    c_in, c_out, kernel = weight.shape
    blocks = kernel // stride
    by_block = weight.permute(0, 2, 1).reshape(c_in, blocks, stride * c_out)
    return by_block.flip(1).transpose(0, 1).reshape(blocks * c_in, -1).contiguous()


def reflected(x: Tensor, start: int, stop: int, mode: str) -> Tensor:
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


def pad_rows(x: Tensor, left: int, right: int, mode: str) -> Tensor:
    """``mode`` padding along the time axis of [B, L, C], its rows as :func:`reflected`
    gives them (reflect needs L > max(left, right))."""
    if left == right == 0:
        return x
    length = x.shape[1]
    return torch.cat([reflected(x, -left, 0, mode), x,
                      reflected(x, length, length + right, mode)], dim=1)


def conv_rows(x: Tensor, taps: Tensor, bias: Tensor | None, kernel: int, stride: int,
              dilation: int) -> Tensor:
    """A convolution (effective ``kernel``) on padded time-major x [B, L, C_in] -> every
    window that fits [B, (L - kernel) // stride + 1, C_out], weight as :func:`conv_taps`."""
    batch, length, channels = x.shape
    out_len = (length - kernel) // stride + 1
    c_out = taps.shape[-1]
    if out_len <= 0:
        return x.new_empty(batch, 0, c_out)
    if batch * out_len <= FEW_ROWS or (stride == 1 and channels * taps.shape[0] <= SMALL_IM2COL):
        # the first conv, or a streamed step: the windows side by side, one product
        if stride == 1:
            windows = x.unfold(1, kernel, 1)[..., ::dilation]  # [B, L_out, C, k]
        else:
            usable = (out_len - 1) * stride + kernel
            blocks = x[:, :usable].reshape(batch, usable // stride, stride * channels)
            windows = blocks.unfold(1, taps.shape[0], 1)  # [B, L_out, s * C, m]
        flat = windows.transpose(2, 3).reshape(batch * out_len, -1)
        if bias is not None:
            out = torch.addmm(bias, flat, taps.reshape(-1, c_out))
        else:
            out = torch.mm(flat, taps.reshape(-1, c_out))
        return out.view(batch, out_len, c_out)
    if stride == 1:
        views = [x[:, j * dilation : j * dilation + out_len] for j in range(taps.shape[0])]
    else:
        usable = (out_len - 1) * stride + kernel
        blocks = x[:, :usable].reshape(batch, usable // stride, stride * channels)
        views = [blocks[:, m : m + out_len] for m in range(taps.shape[0])]
    out = x.new_empty(batch, out_len, c_out)
    for b in range(batch):
        if bias is not None:
            torch.addmm(bias, views[0][b], taps[0], out=out[b])
        else:
            torch.mm(views[0][b], taps[0], out=out[b])
        for view, tap in zip(views[1:], taps[1:]):
            out[b].addmm_(view[b], tap)
    return out


def conv_transpose_rows(x: Tensor, taps: Tensor, bias: Tensor | None, kernel: int,
                        stride: int) -> Tensor:
    """A transposed convolution of kernel ``m * s`` on time-major x [B, T, C_in], untrimmed:
    [B, (T + m - 1) * s, C_out], weight as :func:`transposed_taps`: one product per block
    of output rows, of the ``m`` frames that reach each row side by side (gathered in a
    buffer in the cache; frames before the first and after the last are zeros)."""
    batch, frames, c_in = x.shape
    blocks = kernel // stride
    total = frames + blocks - 1
    out = x.new_empty(batch, total, taps.shape[-1])
    # blocks of at least half as many rows as the weights have: the weights, read once
    # per block, stay within a few times the block's own rows
    rows = min(total, max(BLOCK_BYTES // (4 * taps.shape[0]), taps.shape[0] // 2, 16))
    gathered = x.new_empty(batch, rows, blocks, c_in)
    bias = bias.repeat(stride) if bias is not None else None
    for r0 in range(0, total, rows):
        r1 = min(r0 + rows, total)
        window = reflected(x, r0 - blocks + 1, r1, "constant")  # [B, n + blocks - 1, C_in]
        cols = gathered[:, : r1 - r0]
        cols.copy_(window.unfold(1, blocks, 1).transpose(2, 3))
        for b in range(batch):
            if bias is not None:
                torch.addmm(bias, cols[b].view(r1 - r0, -1), taps, out=out[b, r0:r1])
            else:
                torch.mm(cols[b].view(r1 - r0, -1), taps, out=out[b, r0:r1])
    return out.view(batch, -1, taps.shape[-1] // stride)


__all__ = ["BLOCK_BYTES", "FEW_ROWS", "SMALL_IM2COL", "conv_rows", "conv_taps",
           "conv_transpose_rows", "pad_rows", "reflected", "transposed_taps"]
