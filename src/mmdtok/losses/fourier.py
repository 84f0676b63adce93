"""The ``rff`` estimator: the exact MMD through random Fourier features, streamed over clips.

For a Gaussian kernel of bandwidth a, ``k(u, v) = E_w[cos(w . (u - v))]`` with
``w ~ N(0, I / a)``. The empirical characteristic function of the joint rows is
``psi(w) = mean_i exp(i w . x_i)`` and, because a product distribution's characteristic
function is the product of the marginals', that of the product of the marginals is
``prod_k psi_k(w_k)``: the exact V-statistic equals ``E_w |psi(w) - prod_k psi_k(w_k)|^2``,
which F frequencies estimate without bias.

Rows are never materialized: clips are folded to rows, standardized and reduced to sums
chunk by chunk, and the backward pass recomputes each chunk and writes the gradient
straight into the streams' layout (with the gradient of the standardization statistics
applied in closed form), so memory beyond the input and its gradient stays at one chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmdtok import patterns
from mmdtok.distributed import all_reduce_sum

# Floats a chunk may hold at once (phases and their sines and cosines): 32M = 128 MiB.
CHUNK_ELEMENTS = 1 << 25
STANDARDIZE_EPS = 1e-6


def _write(grads: list[Tensor], rows: Tensor, clips: slice, pattern: str) -> None:
    """Write gradient rows [n, P] of ``clips`` into per-codebook gradients [B, D_k, T]."""
    steps, starts = patterns.aligned_offsets(pattern, len(grads), grads[0].shape[-1])
    for grad, start, block in zip(grads, starts, rows.split([g.shape[1] for g in grads], 1)):
        grad[clips, :, start : start + steps] = block.view(-1, steps, grad.shape[1]).transpose(1, 2)


def _rows(parts: Sequence[Tensor], clips: slice, pattern: str, mean: Tensor | None,
          inv_std: Tensor | None) -> Tensor:
    """The (standardized, when ``mean`` is given) rows of ``clips``."""
    rows = patterns.aligned_rows([p[clips] for p in parts], pattern)
    return rows if mean is None else (rows - mean) * inv_std


def _clip_chunks(parts: Sequence[Tensor], pattern: str, per_row: int) -> list[slice]:
    steps, _ = patterns.aligned_offsets(pattern, len(parts), parts[0].shape[-1])
    size = max(1, CHUNK_ELEMENTS // max(1, steps * per_row))
    return [slice(start, start + size) for start in range(0, parts[0].shape[0], size)]


@torch.no_grad()
def row_moments(parts: Sequence[Tensor], pattern: str) -> tuple[Tensor, Tensor, int]:
    """Mean [P], inverse standard deviation [P] and number of rows, over all ranks' rows
    (the statistics that standardize the rows)."""
    chunks = _clip_chunks(parts, pattern, 4 * sum(p.shape[1] for p in parts))
    total, count = None, 0
    for clips in chunks:
        rows = patterns.aligned_rows([p[clips] for p in parts], pattern).double()
        total = rows.sum(0) if total is None else total + rows.sum(0)
        count += rows.shape[0]
    counts = torch.tensor(float(count), dtype=torch.float64, device=total.device)
    num_rows = all_reduce_sum(counts)
    mean = all_reduce_sum(total) / num_rows
    squares = torch.zeros_like(mean)
    for clips in chunks:
        rows = patterns.aligned_rows([p[clips] for p in parts], pattern).double()
        squares += (rows - mean).square().sum(0)
    var = all_reduce_sum(squares) / num_rows
    dtype = parts[0].dtype
    floor = STANDARDIZE_EPS * var.mean() + torch.finfo(torch.float64).tiny  # relative
    return mean.to(dtype), torch.rsqrt(var + floor).to(dtype), int(num_rows)


def frequencies(num_dims: int, bandwidths: Sequence[float], num_features: int,
                generator: torch.Generator) -> Tensor:
    """Frequencies [P, A * F] of the Gaussian kernels: column group a is N(0, I / a)."""
    normal = torch.randn(num_dims, len(bandwidths) * num_features, generator=generator)
    scale = torch.tensor([a**-0.5 for a in bandwidths]).repeat_interleave(num_features)
    return normal * scale


def _phases(rows: Tensor, dims: list[int], freqs: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Joint phases [n, F] and each codebook's phases [n, F]."""
    parts = [block @ w for block, w in zip(rows.split(dims, 1), freqs.split(dims, 0))]
    return torch.stack(parts).sum(0), parts


class _FourierSums(torch.autograd.Function):
    """Sums over rows of (cos, sin) of the joint and per-codebook phases [2 (K + 1), F]."""

    @staticmethod
    def forward(ctx, freqs: Tensor, mean: Tensor | None, inv_std: Tensor | None,  # type: ignore[override]
                pattern: str, *streams: Tensor) -> Tensor:
        # streams: one stacked [B, K, D, T] tensor, or K tensors [B, D_k, T]
        parts = list(streams[0].unbind(1)) if streams[0].ndim == 4 else list(streams)
        dims = [p.shape[1] for p in parts]
        sums = freqs.new_zeros(2 * (len(parts) + 1), freqs.shape[1], dtype=torch.float64)
        chunks = _clip_chunks(parts, pattern, 4 * freqs.shape[1] * (len(parts) + 1))
        for clips in chunks:
            joint, each = _phases(_rows(parts, clips, pattern, mean, inv_std), dims, freqs)
            for i, phase in enumerate([joint, *each]):
                sums[2 * i] += torch.cos(phase).sum(0, dtype=torch.float64)
                sums[2 * i + 1] += torch.sin(phase).sum(0, dtype=torch.float64)
        ctx.save_for_backward(freqs, mean, inv_std, *streams)
        ctx.pattern, ctx.chunks, ctx.dims = pattern, chunks, dims
        ctx.num_rows = parts[0].shape[0] * patterns.aligned_offsets(pattern, len(parts),
                                                                     parts[0].shape[-1])[0]
        return sums

    @staticmethod
    def backward(ctx, grad_sums: Tensor):  # type: ignore[override]
        freqs, mean, inv_std, *streams = ctx.saved_tensors
        pattern, dims = ctx.pattern, ctx.dims
        g = grad_sums.to(freqs.dtype)
        # the gradient in the layout of the input (no stacking of K gradients afterwards)
        outputs = [torch.zeros_like(s) for s in streams]
        stacked = streams[0].ndim == 4
        parts = list(streams[0].unbind(1)) if stacked else streams
        grads = list(outputs[0].unbind(1)) if stacked else outputs
        sum_g = freqs.new_zeros(sum(dims), dtype=torch.float64)
        sum_gx = torch.zeros_like(sum_g)
        for clips in ctx.chunks:
            rows = _rows(parts, clips, pattern, mean, inv_std)
            joint, each = _phases(rows, dims, freqs)
            slope_joint = torch.cos(joint) * g[1] - torch.sin(joint) * g[0]
            grad_rows = torch.cat([
                (slope_joint + torch.cos(phase) * g[2 * k + 3] - torch.sin(phase) * g[2 * k + 2])
                @ w.t() for k, (phase, w) in enumerate(zip(each, freqs.split(dims, 0)))], dim=1)
            if mean is not None:
                sum_g += grad_rows.sum(0, dtype=torch.float64)
                sum_gx += (grad_rows * rows).sum(0, dtype=torch.float64)
            _write(grads, grad_rows, clips, pattern)
        if mean is not None:  # through the standardization: s (g - mean(g) - x~ mean(g x~))
            num_rows = all_reduce_sum(torch.tensor(float(ctx.num_rows), dtype=torch.float64,
                                                    device=freqs.device))
            mean_g = (all_reduce_sum(sum_g) / num_rows).to(freqs.dtype)
            mean_gx = (all_reduce_sum(sum_gx) / num_rows).to(freqs.dtype)
            for clips in ctx.chunks:
                rows = _rows(parts, clips, pattern, mean, inv_std)
                grad_rows = patterns.aligned_rows([grad[clips] for grad in grads], pattern)
                _write(grads, inv_std * (grad_rows - mean_g - rows * mean_gx), clips, pattern)
        return (None, None, None, None, *outputs)


def fourier_sums(streams: Tensor | Sequence[Tensor], pattern: str, freqs: Tensor,
                 stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Sums over this rank's rows of (cos, sin) of the joint phase and of each codebook's
    phase: [2 (K + 1), A * F], differentiable with respect to the streams ([B, K, D, T],
    or K tensors [B, D_k, T]). ``stats``: (mean, inverse std) to standardize the rows with.
    """
    mean, inv_std = stats if stats is not None else (None, None)
    tensors = (streams,) if isinstance(streams, Tensor) else tuple(streams)
    return _FourierSums.apply(freqs, mean, inv_std, pattern, *tensors)


def fourier_mmd(sums: Tensor, num_rows: int, num_bandwidths: int) -> Tensor:
    """Per bandwidth [A]: mean over frequencies of ``|psi_joint - prod_k psi_k|^2``, an
    unbiased estimate of the ``exact`` V-statistic."""
    psi = sums / num_rows
    joint_re, joint_im = psi[0], psi[1]
    prod_re, prod_im = psi[2], psi[3]
    for k in range(2, psi.shape[0] // 2):
        re, im = psi[2 * k], psi[2 * k + 1]
        prod_re, prod_im = prod_re * re - prod_im * im, prod_re * im + prod_im * re
    gap = (joint_re - prod_re).square() + (joint_im - prod_im).square()
    return gap.view(num_bandwidths, -1).mean(dim=1)
