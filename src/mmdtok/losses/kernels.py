"""MMD estimators between a joint sample and the product of its marginals.

Rows ``x`` [N, P] are the concatenation of K blocks (codebooks) of widths ``dims``. The
kernel is a sum of Gaussians over bandwidths ``a``: ``sum_a exp(-||u - v||^2 / (2 a))``,
written with ``scales = 1 / (2 a)``. On the concatenated vector a Gaussian is the product
of the Gaussians on the blocks, which is what makes the closed forms below possible.

Every estimator works through the rows in blocks and recomputes each block in the
backward pass (gradient checkpointing), so memory grows as O(N * block), never N x N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# Floats a block may hold at once (each saved kernel matrix counts): 32M = 128 MiB.
BLOCK_ELEMENTS = 1 << 25


def sqdist(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """Squared distances [n, m] between rows a [n, P] and b [m, P], given their squared
    norms."""
    return (torch.addmm(b_sq[None, :], a, b.t(), alpha=-2) + a_sq[:, None]).clamp(min=0)


def block_rows(num_rows: int, per_row: int, block_size: int | None) -> int:
    """Rows per block: ``block_size`` if given, else what fits in ``BLOCK_ELEMENTS``."""
    if block_size is not None:
        return max(1, block_size)
    return max(1, min(num_rows, BLOCK_ELEMENTS // max(1, per_row)))


def _blocks(num_rows: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def _maybe_checkpoint(fn: Callable[..., Tensor | tuple[Tensor, ...]], *args: Tensor):
    if torch.is_grad_enabled() and any(arg.requires_grad for arg in args):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def kernel_sums(d: Tensor, scales: Sequence[float]) -> Tensor:
    """``[sum(exp(-s * d)) for s in scales]`` -> [A]."""
    return torch.stack([torch.exp(d * -scale).sum() for scale in scales])


# --- shuffle: the paper's Algorithm 1 -------------------------------------------------


def shuffle_rows(x: Tensor, dims: Sequence[int], generator: torch.Generator) -> Tensor:
    """A sample of the product of the marginals: each block's rows permuted on its own."""
    num_rows = x.shape[0]
    blocks = x.split(list(dims), dim=1)
    permutations = [torch.randperm(num_rows, generator=generator).to(x.device) for _ in dims]
    return torch.cat([block[perm] for block, perm in zip(blocks, permutations)], dim=1)


def shuffle_sums(x: Tensor, y: Tensor, scales: Sequence[float],
                 block_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Kernel sums over all ordered pairs for (x, x), (y, y) and (x, y): [3, A], and the
    diagonal sums of (x, x) and (y, y): [2, A] (the terms a U-statistic leaves out)."""
    num_rows = x.shape[0]
    x_sq, y_sq = x.square().sum(1), y.square().sum(1)
    size = block_rows(num_rows, num_rows * 3 * (len(scales) + 1), block_size)

    def block(start: int, stop: int):
        def fn(x, y, x_sq, y_sq):
            xb, yb, xb_sq, yb_sq = x[start:stop], y[start:stop], x_sq[start:stop], y_sq[start:stop]
            d_xx, d_yy = sqdist(xb, x, xb_sq, x_sq), sqdist(yb, y, yb_sq, y_sq)
            d_xy = sqdist(xb, y, xb_sq, y_sq)
            sums = torch.stack([kernel_sums(d, scales) for d in (d_xx, d_yy, d_xy)])
            diagonals = torch.stack([kernel_sums(d.diagonal(offset=start), scales)
                                     for d in (d_xx, d_yy)])
            return sums, diagonals
        return _maybe_checkpoint(fn, x, y, x_sq, y_sq)

    parts = [block(start, stop) for start, stop in _blocks(num_rows, size)]
    return (torch.stack([p[0] for p in parts]).sum(0), torch.stack([p[1] for p in parts]).sum(0))


def shuffle_mmd(sums: Tensor, diagonals: Tensor, num_rows: int) -> Tensor:
    """Per bandwidth [A]: U-statistics within x and within y, V-statistic across."""
    pairs = num_rows * (num_rows - 1)
    within = (sums[0] - diagonals[0]) / pairs + (sums[1] - diagonals[1]) / pairs
    return within - 2 * sums[2] / num_rows**2


def shuffle_mmd_by_clips(sums: Tensor, num_clips: int) -> Tensor:
    """Per bandwidth [A], the published implementation's normalization: n = the number of
    clips (not rows) in ``(S - n) / (n (n - 1))`` and ``S / n^2``, clamped at 0."""
    pairs = num_clips * (num_clips - 1)
    value = (sums[0] - num_clips) / pairs + (sums[1] - num_clips) / pairs
    return (value - 2 * sums[2] / num_clips**2).clamp(min=0)


# --- exact: MMD between the empirical joint and the product of empirical marginals ----


def exact_stats(x: Tensor, dims: Sequence[int], scales: Sequence[float],
                block_size: int | None = None) -> tuple[Tensor, Tensor]:
    """For each bandwidth, ``sum_ij prod_k G_k[i, j]`` [A] and the row means of every
    block's kernel matrix ``m[a, k, i] = mean_j G_k[i, j]`` [A, K, N], where ``G_k`` is
    the Gaussian kernel matrix of block k."""
    num_rows, num_blocks = x.shape[0], len(dims)
    blocks = list(x.split(list(dims), dim=1))
    block_sq = [block.square().sum(1) for block in blocks]
    size = block_rows(num_rows, num_rows * (len(scales) + 1) * (num_blocks + 1), block_size)

    def row_block(start: int, stop: int):
        def fn(*tensors):
            parts, norms = tensors[:num_blocks], tensors[num_blocks:]
            distances = [sqdist(p[start:stop], p, n[start:stop], n) for p, n in zip(parts, norms)]
            joint_sums, row_means = [], []
            for scale in scales:
                kernels = [torch.exp(d * -scale) for d in distances]
                product = kernels[0]
                for kernel in kernels[1:]:
                    product = product * kernel
                joint_sums.append(product.sum())
                row_means.append(torch.stack([kernel.mean(1) for kernel in kernels]))
            return torch.stack(joint_sums), torch.stack(row_means)  # [A], [A, K, b]
        return _maybe_checkpoint(fn, *blocks, *block_sq)

    parts = [row_block(start, stop) for start, stop in _blocks(num_rows, size)]
    return torch.stack([p[0] for p in parts]).sum(0), torch.cat([p[1] for p in parts], dim=2)


def exact_mmd(joint_sums: Tensor, row_means: Tensor) -> Tensor:
    """Per bandwidth [A]: ``A - 2 B + C`` with A the joint-joint term, B the joint-product
    term, C the product-product term (a V-statistic, >= 0 up to rounding)."""
    num_rows = row_means.shape[-1]
    joint = joint_sums / num_rows**2
    cross = row_means.prod(dim=1).mean(dim=-1)
    product = row_means.mean(dim=-1).prod(dim=1)
    return joint - 2 * cross + product


# --- rff: random Fourier features, linear in N -------------------------------------------


def fourier_frequencies(num_dims: int, bandwidths: Sequence[float], num_features: int,
                        generator: torch.Generator) -> Tensor:
    """Frequencies [P, A * F] of the Gaussian kernels: column group a is N(0, I / a)."""
    normal = torch.randn(num_dims, len(bandwidths) * num_features, generator=generator)
    scale = torch.tensor([a**-0.5 for a in bandwidths]).repeat_interleave(num_features)
    return normal * scale


def fourier_sums(x: Tensor, dims: Sequence[int], frequencies: Tensor,
                 block_size: int | None = None) -> Tensor:
    """Sums over rows of the joint and per-block characteristic-function terms:
    [2 (K + 1), A * F] = (cos, sin) of the joint phase, then of each block's phase."""
    num_rows, num_features = x.shape[0], frequencies.shape[1]
    size = block_rows(num_rows, num_features * 4 * (len(dims) + 1), block_size)
    freq_blocks = frequencies.split(list(dims), dim=0)

    def fn(chunk: Tensor) -> Tensor:
        phases = [part @ freqs for part, freqs in zip(chunk.split(list(dims), dim=1),
                                                      freq_blocks)]
        joint = phases[0]
        for phase in phases[1:]:
            joint = joint + phase
        terms = []
        for phase in [joint, *phases]:
            terms += [torch.cos(phase).sum(0), torch.sin(phase).sum(0)]
        return torch.stack(terms)

    return torch.stack([_maybe_checkpoint(fn, x[start:stop])
                        for start, stop in _blocks(num_rows, size)]).sum(0)


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


# --- bandwidths ----------------------------------------------------------------------


MEDIAN_PAIRS = 4096  # random pairs of rows that estimate the median distance


def random_pairs(num_rows: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``MEDIAN_PAIRS`` index pairs (i, j) of distinct rows, drawn at random."""
    count = min(MEDIAN_PAIRS, num_rows * (num_rows - 1))
    first = torch.randint(num_rows, (count,), generator=generator)
    second = (first + torch.randint(1, num_rows, (count,), generator=generator)) % num_rows
    return first, second


def median_sqdist(first: Tensor, second: Tensor) -> float:
    """Median squared distance between paired rows first[i], second[i] [M, P]."""
    with torch.no_grad():
        return float((first - second).square().sum(1).median()) if len(first) else 1.0
