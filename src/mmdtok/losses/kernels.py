"""MMD estimators between a joint sample and the product of its marginals.

Rows ``x`` [N, P] are the concatenation of K blocks (codebooks) of widths ``dims``. The
kernel is a sum of Gaussians over bandwidths ``a``: ``sum_a exp(-||u - v||^2 / (2 a))``,
written with ``scales = 1 / (2 a)``. On the concatenated vector a Gaussian is the product
of the Gaussians on the blocks, which is what makes the closed forms below possible.

Both estimators work through square tiles of the N x N pair matrices (the upper triangle
where the matrix is symmetric) and recompute each tile in the backward pass, which applies
the gradient in closed form, so memory grows as O(N + tile^2), never N x N.
(The ``rff`` estimator is in :mod:`mmdtok.losses.fourier`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Exponents are floored here before exp: a kernel value below exp(-60) ~ 9e-27 changes no
# float32 sum of kernel values, while exponents near -100 (typical for standardized
# 512-dimensional rows and bandwidth 5) give denormal floats that the CPU computes about
# 25x more slowly, in exp and in every product of the backward pass. The backward passes
# use ``-scale * kernel`` as the slope everywhere, floor included (a difference below
# 1e-25 where the floor applies).
EXP_FLOOR = -60.0
FLOOR_VALUE = math.exp(EXP_FLOOR)  # the kernel value at the floor


def gaussian(d: Tensor, scale: float) -> Tensor:
    """``exp(-scale * d)``, floored at ``exp(EXP_FLOOR)`` (see above)."""
    return torch.exp((d * -scale).clamp(min=EXP_FLOOR))


def sqdist(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """Squared distances [n, m] between rows a [n, P] and b [m, P], given their squared
    norms."""
    return torch.addmm(b_sq[None, :], a, b.t(), alpha=-2).add_(a_sq[:, None]).clamp_(min=0)


def _blocks(num_rows: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def kernel_sums(d: Tensor, scales: Sequence[float]) -> Tensor:
    """``[sum(exp(-s * d)) for s in scales]`` -> [A], accumulated in float64: the MMD is a
    small difference of such sums."""
    return torch.stack([gaussian(d, scale).sum(dtype=torch.float64) for scale in scales])


# --- shuffle: the paper's Algorithm 1 -------------------------------------------------


def shuffle_rows(x: Tensor, dims: Sequence[int], generator: torch.Generator) -> Tensor:
    """A sample of the product of the marginals: each block's rows permuted on its own."""
    num_rows = x.shape[0]
    blocks = x.split(list(dims), dim=1)
    permutations = [torch.randperm(num_rows, generator=generator).to(x.device) for _ in dims]
    return torch.cat([block[perm] for block, perm in zip(blocks, permutations)], dim=1)


def _without_diagonal(weights: Tensor) -> Tensor:
    """Zero the (i, i) entries of a diagonal tile of a square weight matrix.

    A pair (i, i) has no gradient (||x_i - x_i|| does not depend on x_i), but its weight is
    the largest (kernel value 1) and the two terms of :func:`_add_pair_gradients` would cancel
    it only up to float32 rounding, which can exceed the true gradient.
    """
    weights.diagonal().zero_()
    return weights


TILE = 512  # the side of the square tiles on a CPU: a tile is 1 MiB of floats (in cache)
GPU_TILE = 4096  # on a GPU: fewer, larger kernels


def tile_side(x: Tensor, block_size: int | None) -> int:
    """The side of the square tiles for rows ``x``: ``block_size`` if given, else
    ``TILE`` (``GPU_TILE`` on a GPU), at most the number of rows."""
    default = GPU_TILE if x.is_cuda else TILE
    return max(1, min(x.shape[0], default if block_size is None else block_size))


def _floored(d: Tensor, scales: Sequence[float], diagonal: bool) -> list[bool]:
    """For each scale, whether every kernel value of the tile is the floor (then no
    exponential is needed). A diagonal tile holds the zero distances of (i, i) pairs. (Not
    on a GPU: there the floor saves nothing, and reading the minimum would wait for it.)"""
    if diagonal or d.is_cuda:
        return [False] * len(scales)
    nearest = float(d.min())
    return [scale * nearest >= -EXP_FLOOR for scale in scales]


_HALF_FLOOR = math.exp(EXP_FLOOR / 2)  # a kernel value whose square is the floor


def _kernels(d: Tensor, scales: Sequence[float], diagonal: bool,
             buffers: tuple[Tensor, Tensor], needed: Sequence[bool] | None = None):
    """``(a, exp(-scales[a] * d))`` floored, for every bandwidth of tile ``d`` (only those
    ``needed``, if given), in order of increasing scale; the floor itself (a number) where
    the whole tile is at it. A scale twice the one before it (as for the paper's
    bandwidths 20, 10, 5, and the median factors) gets the square of that kernel: one
    multiplication instead of an exponential (clamped first at the square root of the
    floor, so that no denormal appears). The two ``buffers`` alternate: a kernel stays
    valid until the next one but one is made."""
    flags = _floored(d, scales, diagonal)
    previous = None  # (scale, kernel) of the last exponential or square
    for count, a in enumerate(sorted(range(len(scales)), key=lambda a: scales[a])):
        if needed is not None and not needed[a]:
            previous = None
            continue
        if flags[a]:  # then so are all larger scales
            yield a, FLOOR_VALUE
            continue
        buffer = buffers[count % 2]
        if previous is not None and math.isclose(scales[a], 2 * previous[0], rel_tol=1e-12):
            kernel = torch.clamp(previous[1], min=_HALF_FLOOR, out=buffer).square_()
        else:
            kernel = torch.mul(d, -scales[a], out=buffer).clamp_(min=EXP_FLOOR).exp_()
        previous = (scales[a], kernel)
        yield a, kernel


def _tile_terms(d: Tensor, scales: Sequence[float], diagonal: bool,
                buffers: tuple[Tensor, Tensor], *, sums: bool = True,
                slopes: Sequence[float] | None = None) -> tuple[Tensor | None, Tensor | None]:
    """On one tile, from the same kernels (:func:`_kernels`): the [A] kernel sums (if
    ``sums``: each row in the input's precision, the rows in float64, which casts no
    tile-sized copy) and the weights ``sum_a slopes[a] * -scale_a * G_a`` (if
    ``slopes``), the derivative of the weighted kernel sums with respect to the squared
    distances."""
    totals, weights, constant = [None] * len(scales), None, 0.0
    if slopes is not None:
        weights = torch.zeros_like(d)
    needed = None if sums else [bool(slope) for slope in slopes]
    for a, kernel in _kernels(d, scales, diagonal, buffers, needed):
        slope = slopes[a] if slopes is not None else 0.0
        if isinstance(kernel, float):
            if sums:
                totals[a] = d.new_full((), kernel * d.numel(), dtype=torch.float64)
            constant -= scales[a] * slope * kernel
        else:
            if sums:
                totals[a] = kernel.sum(1).sum(dtype=torch.float64)
            if slope:
                weights.add_(kernel, alpha=-scales[a] * slope)
    if constant:
        weights.add_(constant)
    return (torch.stack(totals) if sums else None), weights


def _tile_sums(d: Tensor, scales: Sequence[float], diagonal: bool,
               buffers: tuple[Tensor, Tensor]) -> Tensor:
    """[A] kernel sums of a tile, in float64 (see :func:`_tile_terms`)."""
    return _tile_terms(d, scales, diagonal, buffers)[0]


def _tile_weights(d: Tensor, scales: Sequence[float], slopes: Sequence[float],
                  diagonal: bool, buffers: tuple[Tensor, Tensor]) -> Tensor:
    """The gradient weights of a tile alone (see :func:`_tile_terms`)."""
    return _tile_terms(d, scales, diagonal, buffers, sums=False, slopes=slopes)[1]


def _tile_buffers(x: Tensor, size: int) -> Tensor:
    """Room for the two alternating kernel tiles of :func:`_kernels`."""
    return x.new_empty(2, size * size)


def _tiles_of(buffers: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """[rows, cols] views of the front of the two flat tile buffers (edge tiles are
    smaller)."""
    return buffers[0, : rows * cols].view(rows, cols), buffers[1, : rows * cols].view(rows, cols)


def _grid(num_rows: int, size: int, triangle: bool) -> list[tuple[int, int, int, int]]:
    """Tiles (i0, i1, j0, j1): all of them, or the upper triangle i0 <= j0."""
    blocks = _blocks(num_rows, size)
    return [(*rows, *cols) for i, rows in enumerate(blocks)
            for cols in (blocks[i:] if triangle else blocks)]


def _add_pair_gradients(grad_rows: Tensor, grad_cols: Tensor, rows: Tensor, cols: Tensor,
                        weights: Tensor, factor: float, diagonal: bool) -> None:
    """Add the gradient of ``factor / 2 * sum_ij weights[i, j] * ||rows_i - cols_j||^2`` to
    the rows' and (off the diagonal) the columns' gradients: ``factor * (rows * rowsum(W)
    - W @ cols)`` and its transpose. On a diagonal tile rows and columns are the same
    vectors and the tile is symmetric, so the row side holds the whole gradient."""
    grad_rows.addmm_(weights, cols, alpha=-factor).addcmul_(
        rows, weights.sum(1, keepdim=True), value=factor)
    if not diagonal:
        grad_cols.addmm_(weights.t(), rows, alpha=-factor).addcmul_(
            cols, weights.sum(0)[:, None], value=factor)


def _proportion(grad: Tensor, expected: Tensor) -> float | None:
    """``c`` where ``grad == c * expected`` (up to float64 rounding), else None."""
    pivot = int(expected.abs().argmax())
    factor = float(grad.flatten()[pivot] / expected.flatten()[pivot])
    residual = float((grad - factor * expected).abs().max())
    return factor if residual <= 1e-9 * abs(factor) * float(expected.abs().max()) else None


class _ShuffleSums(torch.autograd.Function):
    """Kernel sums of (x, x), (y, y), (x, y) and the diagonals of the first two, in tiles.

    (x, x) and (y, y) are symmetric: only the tiles of the upper triangle are computed,
    the off-diagonal ones counted twice. The diagonal terms have a zero gradient
    (||x_i - x_i|| does not depend on x_i). A tile whose kernel values are all the floor
    for a bandwidth (``EXP_FLOOR``) needs no exponential for it: its sum and its slope are
    constants.

    Gradient: with ``slopes`` (the loss's expected derivatives with respect to the sums,
    [3][A]) the forward pass also applies the analytic gradient of ``sum slopes * sums``
    to each tile's rows and columns while the tile's exponentials are at hand; the
    backward pass scales it when the incoming gradient is proportional to ``slopes`` (a
    loss weight) and otherwise, or without slopes, recomputes each tile's distances and
    kernels for the slopes it is given.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, scales: Sequence[float],  # type: ignore[override]
                size: int, slopes: list[list[float]] | None) -> tuple[Tensor, Tensor]:
        x_sq, y_sq = x.square().sum(1), y.square().sum(1)
        sums = x.new_zeros(3, len(scales), dtype=torch.float64)
        diagonals = x.new_zeros(2, len(scales), dtype=torch.float64)
        grads = None if slopes is None else (torch.zeros_like(x), torch.zeros_like(y))
        _shuffle_passes(x, y, x_sq, y_sq, scales, size, slopes, grads, sums, diagonals)
        ctx.save_for_backward(x, y)
        ctx.scales, ctx.size, ctx.fused = list(scales), size, None
        if slopes is not None:
            ctx.fused = (torch.tensor(slopes, dtype=torch.float64, device=x.device), *grads)
        return sums, diagonals

    @staticmethod
    def backward(ctx, grad_sums: Tensor, grad_diagonals: Tensor):  # type: ignore[override]
        x, y = ctx.saved_tensors
        if ctx.fused is not None:
            expected, grad_x, grad_y = ctx.fused
            factor = _proportion(grad_sums, expected)
            if factor is not None:
                return grad_x * factor, grad_y * factor, None, None, None
        x_sq, y_sq = x.square().sum(1), y.square().sum(1)
        grads = (torch.zeros_like(x), torch.zeros_like(y))
        slopes = [[float(g) for g in row] for row in grad_sums]
        _shuffle_passes(x, y, x_sq, y_sq, ctx.scales, ctx.size, slopes, grads, None, None)
        return *grads, None, None, None


def _shuffle_passes(x: Tensor, y: Tensor, x_sq: Tensor, y_sq: Tensor, scales: Sequence[float],
                    size: int, slopes: list[list[float]] | None,
                    grads: tuple[Tensor, Tensor] | None, sums: Tensor | None,
                    diagonals: Tensor | None) -> None:
    """One pass over the tiles of (x, x), (y, y) and (x, y): add the kernel sums to
    ``sums`` and ``diagonals`` (when given) and the gradient of ``sum slopes * sums`` to
    ``grads`` (when given)."""
    num_rows, want_sums = x.shape[0], sums is not None
    buffers = _tile_buffers(x, size)

    def row_slopes(row):
        return slopes[row] if grads is not None and any(slopes[row]) else None

    for i0, i1, j0, j1 in _grid(num_rows, size, triangle=True):
        diagonal, tiles = i0 == j0, _tiles_of(buffers, i1 - i0, j1 - j0)
        for row, (u, u_sq) in enumerate(((x, x_sq), (y, y_sq))):
            if not want_sums and row_slopes(row) is None:
                continue
            d = sqdist(u[i0:i1], u[j0:j1], u_sq[i0:i1], u_sq[j0:j1])
            tile_sums, w = _tile_terms(d, scales, diagonal, tiles, sums=want_sums,
                                       slopes=row_slopes(row))
            if want_sums:
                sums[row] += tile_sums * (1 if diagonal else 2)
                if diagonal:
                    diagonals[row] += kernel_sums(d.diagonal(), scales)
            if w is not None:
                if diagonal:
                    _without_diagonal(w)
                # Each unordered pair appears twice in the sum over ordered pairs.
                _add_pair_gradients(grads[row][i0:i1], grads[row][j0:j1], u[i0:i1],
                                    u[j0:j1], w, 4.0, diagonal)
    if not want_sums and row_slopes(2) is None:
        return
    for i0, i1, j0, j1 in _grid(num_rows, size, triangle=False):
        tiles = _tiles_of(buffers, i1 - i0, j1 - j0)
        d = sqdist(x[i0:i1], y[j0:j1], x_sq[i0:i1], y_sq[j0:j1])
        tile_sums, w = _tile_terms(d, scales, False, tiles, sums=want_sums,
                                   slopes=row_slopes(2))
        if want_sums:
            sums[2] += tile_sums
        if w is not None:
            _add_pair_gradients(grads[0][i0:i1], grads[1][j0:j1], x[i0:i1], y[j0:j1], w,
                                2.0, False)


def shuffle_sums(x: Tensor, y: Tensor, scales: Sequence[float],
                 block_size: int | None = None,
                 slopes: Sequence[Sequence[float]] | None = None) -> tuple[Tensor, Tensor]:
    """Kernel sums over all ordered pairs for (x, x), (y, y) and (x, y): [3, A], and the
    diagonal sums of (x, x) and (y, y): [2, A] (the terms a U-statistic leaves out).
    ``block_size`` is the side of the square tiles (see :func:`tile_side`). ``slopes``
    [3][A], the derivatives the loss will have with respect to the sums (for example
    :func:`shuffle_slopes`), let the forward pass compute the gradient from the same
    exponentials (when a gradient is needed); any other gradient is still exact."""
    fuse = (slopes is not None and torch.is_grad_enabled()
            and (x.requires_grad or y.requires_grad))
    fused = [[float(s) for s in row] for row in slopes] if fuse else None
    return _ShuffleSums.apply(x, y, list(scales), tile_side(x, block_size), fused)


def shuffle_slopes(count: int, num_scales: int) -> list[list[float]]:
    """The derivatives [3][A] of the summed :func:`shuffle_mmd` (``count`` = rows) or
    unclamped :func:`shuffle_mmd_by_clips` (``count`` = clips) with respect to the sums."""
    pairs = count * (count - 1)
    return [[1 / pairs] * num_scales, [1 / pairs] * num_scales,
            [-2 / count**2] * num_scales]


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


def _row_and_column_sums(kernel: Tensor | float, d: Tensor) -> tuple[Tensor | float,
                                                                     Tensor | float]:
    """Row sums [n] and column sums [m] of the kernel of tile ``d`` (at most a tile side of
    values each, summed in the input's precision), as float64 for the accumulation over
    tiles (numbers for a floored tile)."""
    if isinstance(kernel, float):
        return kernel * d.shape[1], kernel * d.shape[0]
    return kernel.sum(1).double(), kernel.sum(0).double()


def _total(tensors: Sequence[Tensor]) -> Tensor:
    """The elementwise sum of tensors, in one new tensor."""
    total = tensors[0] + tensors[1] if len(tensors) > 1 else tensors[0].clone()
    for t in tensors[2:]:
        total.add_(t)
    return total


class _ExactStats(torch.autograd.Function):
    """``sum_ij prod_k G_k[i, j]`` [A] and row means ``mean_j G_k[i, j]`` [A, K, N], in
    square tiles of the upper triangle (every term is symmetric in (i, j)).

    Backward: each tile's terms are symmetric in (i, j) once the row-mean term
    ``c_k[i] G_k[i, j]`` is written ``(c_k[i] + c_k[j]) / 2 G_k[i, j]``, so one weight
    matrix per tile and codebook gives the gradient of the tile's rows and columns.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dims: Sequence[int],  # type: ignore[override]
                scales: Sequence[float], size: int) -> tuple[Tensor, Tensor]:
        num_rows = x.shape[0]
        parts = x.split(list(dims), dim=1)
        norms = [p.square().sum(1) for p in parts]
        joint_sums = torch.zeros(len(scales), dtype=torch.float64, device=x.device)
        row_sums = torch.zeros(len(scales), len(dims), num_rows, dtype=torch.float64,
                               device=x.device)
        buffers = _tile_buffers(x, size)
        for i0, i1, j0, j1 in _grid(num_rows, size, triangle=True):
            diagonal, tiles = i0 == j0, _tiles_of(buffers, i1 - i0, j1 - j0)
            joint = None  # the sum of the blocks' distances: prod_k G_k is its Gaussian
            for k, (p, n) in enumerate(zip(parts, norms)):  # one block's tile at a time
                d = sqdist(p[i0:i1], p[j0:j1], n[i0:i1], n[j0:j1])
                for a, kernel in _kernels(d, scales, diagonal, tiles):
                    rows, cols = _row_and_column_sums(kernel, d)
                    row_sums[a, k, i0:i1] += rows
                    if not diagonal:
                        row_sums[a, k, j0:j1] += cols
                joint = d if joint is None else joint.add_(d)
            joint_sums += _tile_sums(joint, scales, diagonal, tiles) * (1 if diagonal else 2)
        ctx.save_for_backward(x)
        ctx.dims, ctx.scales, ctx.size = list(dims), list(scales), size
        return joint_sums, row_sums / num_rows

    @staticmethod
    def backward(ctx, grad_joint: Tensor, grad_means: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        num_rows, size, scales = x.shape[0], ctx.size, ctx.scales
        parts = x.split(ctx.dims, dim=1)
        norms = [p.square().sum(1) for p in parts]
        half_c = (grad_means / (2 * num_rows)).to(x.dtype)  # [A, K, N]
        joint_slopes = [float(g) for g in grad_joint]
        grads = [torch.zeros_like(p) for p in parts]
        buffers = _tile_buffers(x, size)
        for i0, i1, j0, j1 in _grid(num_rows, size, triangle=True):
            diagonal, tiles = i0 == j0, _tiles_of(buffers, i1 - i0, j1 - j0)
            distances = [sqdist(p[i0:i1], p[j0:j1], n[i0:i1], n[j0:j1])
                         for p, n in zip(parts, norms)]
            # The slope of the joint term, the same for every codebook.
            shared = _tile_weights(_total(distances), scales, joint_slopes, diagonal, tiles)
            for k, (part, d) in enumerate(zip(parts, distances)):
                w = shared.clone()
                for a, kernel in _kernels(d, scales, diagonal, tiles):
                    rows, cols = half_c[a, k, i0:i1, None], half_c[a, k, None, j0:j1]
                    if isinstance(kernel, float):
                        w.add_(rows + cols, alpha=-scales[a] * kernel)
                    else:
                        w.addcmul_(kernel, rows, value=-scales[a]).addcmul_(
                            kernel, cols, value=-scales[a])
                if diagonal:
                    _without_diagonal(w)
                # Each unordered pair appears twice in the sum over ordered pairs.
                _add_pair_gradients(grads[k][i0:i1], grads[k][j0:j1], part[i0:i1],
                                    part[j0:j1], w, 4.0, diagonal)
        return torch.cat(grads, dim=1), None, None, None


def exact_stats(x: Tensor, dims: Sequence[int], scales: Sequence[float],
                block_size: int | None = None) -> tuple[Tensor, Tensor]:
    """For each bandwidth, ``sum_ij prod_k G_k[i, j]`` [A] and the row means of every
    block's kernel matrix ``m[a, k, i] = mean_j G_k[i, j]`` [A, K, N], where ``G_k`` is
    the Gaussian kernel matrix of block k. ``block_size`` is the side of the square tiles
    (see :func:`tile_side`)."""
    return _ExactStats.apply(x, list(dims), list(scales), tile_side(x, block_size))


def exact_mmd(joint_sums: Tensor, row_means: Tensor) -> Tensor:
    """Per bandwidth [A]: ``A - 2 B + C`` with A the joint-joint term, B the joint-product
    term, C the product-product term (a V-statistic, >= 0 up to rounding)."""
    num_rows = row_means.shape[-1]
    joint = joint_sums / num_rows**2
    cross = row_means.prod(dim=1).mean(dim=-1)
    product = row_means.mean(dim=-1).prod(dim=1)
    return joint - 2 * cross + product


# --- bandwidths ----------------------------------------------------------------------


MEDIAN_PAIRS = 4096  # random pairs of rows that estimate the median distance


def random_pairs(num_rows: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``MEDIAN_PAIRS`` index pairs (i, j) of distinct rows, drawn at random."""
    count = min(MEDIAN_PAIRS, num_rows * (num_rows - 1))
    if count == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    first = torch.randint(num_rows, (count,), generator=generator)
    second = (first + torch.randint(1, num_rows, (count,), generator=generator)) % num_rows
    return first, second


def median_sqdist(first: Tensor, second: Tensor) -> float:
    """Median squared distance between paired rows first[i], second[i] [M, P]."""
    with torch.no_grad():
        return float((first - second).square().sum(1).median()) if len(first) else 1.0
