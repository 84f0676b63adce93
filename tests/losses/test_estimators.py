"""The blocked estimators equal the dense formulas, in value and gradient."""

import pytest
import torch

from mmdtok.losses import IndependenceLoss, fourier, kernels
from mmdtok.losses.independence import standardize_rows, stream_rows
from tests.losses import dense

BANDWIDTHS = (0.5, 2.0, 8.0)
SCALES = [0.5 / a for a in BANDWIDTHS]


def _rows(n=30, dims=(3, 2, 4), dependent=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sum(dims), generator=generator, dtype=torch.float64)
    if dependent:
        x[:, dims[0] : dims[0] + 1] += x[:, :1]  # block 1 leans on block 0
    return x, list(dims)


def test_exact_closed_form_equals_its_definition_by_enumeration():
    x, dims = _rows(n=6, dims=(2, 1, 2))
    joint, means = kernels.exact_stats(x, dims, [0.5 / 1.5])
    torch.testing.assert_close(kernels.exact_mmd(joint, means)[0],
                               dense.exact_mmd_by_enumeration(x, dims, 1.5))


@pytest.mark.parametrize("block_size", [1, 7, 30, None])
def test_blocked_exact_equals_dense_in_value_and_gradient(block_size):
    x, dims = _rows()
    x.requires_grad_()
    joint, means = kernels.exact_stats(x, dims, SCALES, block_size)
    ours = kernels.exact_mmd(joint, means).sum()
    reference = dense.exact_mmd(x, dims, BANDWIDTHS)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0],
                               torch.autograd.grad(reference, x)[0])


@pytest.mark.parametrize("block_size", [1, 7, 30, None])
def test_blocked_shuffle_equals_dense_in_value_and_gradient(block_size):
    x, dims = _rows()
    x.requires_grad_()
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    sums, diagonals = kernels.shuffle_sums(x, y, SCALES, block_size)
    ours = kernels.shuffle_mmd(sums, diagonals, x.shape[0]).sum()
    reference = dense.shuffle_mmd(x, y, BANDWIDTHS)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                               torch.autograd.grad(reference, x)[0])


def _pass_kind(x, y, x_sq, y_sq, scales, size, slopes, grads, sums, diagonals):
    if sums is None:
        return "backward"
    return "forward" if grads is None else "forward with gradient"


def _counting_passes(monkeypatch):
    calls = []
    passes = kernels._shuffle_passes
    monkeypatch.setattr(kernels, "_shuffle_passes",
                        lambda *args: calls.append(_pass_kind(*args)) or passes(*args))
    return calls


@pytest.mark.parametrize("block_size", [7, None])
def test_gradient_from_the_forward_pass_is_used_for_a_weighted_loss(monkeypatch, block_size):
    x, dims = _rows()
    x.requires_grad_()
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    calls = _counting_passes(monkeypatch)
    slopes = kernels.shuffle_slopes(x.shape[0], len(SCALES))
    sums, diagonals = kernels.shuffle_sums(x, y, SCALES, block_size, slopes)
    ours = 3.0 * kernels.shuffle_mmd(sums, diagonals, x.shape[0]).sum()
    reference = 3.0 * dense.shuffle_mmd(x, y, BANDWIDTHS)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                               torch.autograd.grad(reference, x)[0])
    assert calls == ["forward with gradient"]  # nothing recomputed


def test_other_gradients_than_the_announced_slopes_are_recomputed_exactly(monkeypatch):
    x, dims = _rows()
    x.requires_grad_()
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    calls = _counting_passes(monkeypatch)
    slopes = kernels.shuffle_slopes(x.shape[0], len(SCALES))
    sums, diagonals = kernels.shuffle_sums(x, y, SCALES, 7, slopes)
    # Bandwidths weighted unequally (as a clamp at 0 of some of them would): the gradient
    # is no longer proportional to the announced slopes.
    per_bandwidth = kernels.shuffle_mmd(sums, diagonals, x.shape[0])
    ours = 2 * per_bandwidth[0] + per_bandwidth[1:].sum()
    reference = (2 * dense.shuffle_mmd(x, y, BANDWIDTHS[:1])
                 + dense.shuffle_mmd(x, y, BANDWIDTHS[1:]))
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                               torch.autograd.grad(reference, x)[0])
    assert calls == ["forward with gradient", "backward"]  # recomputed


def test_no_gradient_work_without_a_graph(monkeypatch):
    x, dims = _rows()
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    calls = _counting_passes(monkeypatch)
    slopes = kernels.shuffle_slopes(x.shape[0], len(SCALES))
    kernels.shuffle_sums(x, y, SCALES, 7, slopes)  # no input requires a gradient
    with torch.no_grad():
        kernels.shuffle_sums(x.requires_grad_(), y, SCALES, 7, slopes)
    assert calls == ["forward", "forward"]


@pytest.mark.parametrize("estimator", ["shuffle", "exact"])
def test_tiles_beyond_the_floor_skip_their_exponentials_and_change_nothing(monkeypatch,
                                                                          estimator):
    x, dims = _rows(n=40)
    x[20:] += 30.0  # two far clusters: the tiles across them are all at the floor
    x.requires_grad_()
    skipped = []
    floored = kernels._floored
    monkeypatch.setattr(kernels, "_floored",
                        lambda *args: skipped.append(floored(*args)) or skipped[-1])
    if estimator == "shuffle":
        y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
        sums, diagonals = kernels.shuffle_sums(x, y, SCALES, block_size=10)
        ours = kernels.shuffle_mmd(sums, diagonals, x.shape[0]).sum()
        reference = dense.shuffle_mmd(x, y, BANDWIDTHS)
    else:
        ours = kernels.exact_mmd(*kernels.exact_stats(x, dims, SCALES, block_size=10)).sum()
        reference = dense.exact_mmd(x, dims, BANDWIDTHS)
    forward = sum(map(all, skipped))
    assert forward >= 4  # the tiles across the clusters, at least
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                               torch.autograd.grad(reference, x)[0])
    assert sum(map(all, skipped)) >= 2 * forward  # again in the backward pass


@pytest.mark.parametrize("estimator", ["shuffle", "exact"])
def test_kernels_of_doubled_scales_are_squares_with_the_same_values(monkeypatch, estimator):
    chain = (16.0, 8.0, 4.0, 2.0)  # each scale twice the one before: one exponential
    x, dims = _rows(n=20)
    x.requires_grad_()
    exponentials = []
    exp_ = torch.Tensor.exp_
    monkeypatch.setattr(torch.Tensor, "exp_", lambda t: exponentials.append(1) or exp_(t))
    scales = [0.5 / a for a in chain]
    if estimator == "shuffle":
        y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
        ours = kernels.shuffle_mmd(*kernels.shuffle_sums(x, y, scales, 20), 20).sum()
        reference = dense.shuffle_mmd(x, y, chain)
        tiles = 3  # one tile each of (x, x), (y, y), (x, y)
    else:
        ours = kernels.exact_mmd(*kernels.exact_stats(x, dims, scales, 20)).sum()
        reference = dense.exact_mmd(x, dims, chain)
        tiles = 1 + len(dims)  # the joint and each block
    assert len(exponentials) == tiles
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                               torch.autograd.grad(reference, x)[0])


def test_a_recomputed_gradient_takes_no_exponential_for_a_bandwidth_without_slope(
        monkeypatch):
    x, dims = _rows(n=20)
    x.requires_grad_()
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    sums, diagonals = kernels.shuffle_sums(x, y, SCALES, 20)  # no slopes: recomputed
    ours = kernels.shuffle_mmd(sums, diagonals, 20)[0]  # the first bandwidth only
    exponentials = []
    exp_ = torch.Tensor.exp_
    monkeypatch.setattr(torch.Tensor, "exp_", lambda t: exponentials.append(1) or exp_(t))
    grad = torch.autograd.grad(ours, x, retain_graph=True)[0]
    assert len(exponentials) == 3  # one per tile of (x, x), (y, y), (x, y)
    reference = dense.shuffle_mmd(x, y, BANDWIDTHS[:1])
    torch.testing.assert_close(grad, torch.autograd.grad(reference, x)[0])


def test_clips_normalization_reproduces_the_published_formula():
    x, dims = _rows(n=24)
    y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(3))
    sums, _ = kernels.shuffle_sums(x, y, SCALES, block_size=5)
    ours = kernels.shuffle_mmd_by_clips(sums, num_clips=4).sum()
    torch.testing.assert_close(ours, dense.shuffle_mmd(x, y, BANDWIDTHS, n=4, clamp=True))


def _as_parts(x, dims):
    """Rows [N, P] as K streams [1, D_k, N] (parallel pattern: one row per frame)."""
    return [block.t()[None] for block in x.split(dims, dim=1)]


def _rff(parts, freqs, standardized):
    stats = fourier.row_moments(parts, "parallel")[:2] if standardized else None
    sums = fourier.fourier_sums(parts, "parallel", freqs, stats)
    return fourier.fourier_mmd(sums, parts[0].shape[-1], len(BANDWIDTHS)).sum()


def test_gradients_pass_a_finite_difference_check():
    x, dims = _rows(n=8, dims=(2, 2))
    x.requires_grad_()
    freqs = fourier.frequencies(4, BANDWIDTHS, 16, torch.Generator().manual_seed(2)).double()

    def exact(x):
        return kernels.exact_mmd(*kernels.exact_stats(x, dims, SCALES, block_size=3)).sum()

    def shuffle(x):
        y = kernels.shuffle_rows(x, dims, torch.Generator().manual_seed(1))
        return kernels.shuffle_mmd(*kernels.shuffle_sums(x, y, SCALES, block_size=3), 8).sum()

    def rff(x):
        return _rff(_as_parts(x, dims), freqs, standardized=False)

    def rff_standardized(x):  # the statistics' own gradient is applied in closed form
        return _rff(_as_parts(x, dims), freqs, standardized=True)

    for fn in (exact, shuffle, rff, rff_standardized):
        assert torch.autograd.gradcheck(fn, (x,)), fn.__name__


def test_rff_streamed_in_small_chunks_equals_one_chunk_in_value_and_gradient(monkeypatch):
    streams = torch.randn(6, 3, 2, 9, dtype=torch.float64, requires_grad=True)
    freqs = fourier.frequencies(6, BANDWIDTHS, 8, torch.Generator().manual_seed(0)).double()

    def loss(streams):
        parts = list(streams.unbind(1))
        stats = fourier.row_moments(parts, "delay")[:2]
        return fourier.fourier_mmd(fourier.fourier_sums(parts, "delay", freqs, stats),
                                   6 * 7, len(BANDWIDTHS)).sum()

    whole = loss(streams)
    grad_whole = torch.autograd.grad(whole, streams)[0]
    monkeypatch.setattr(fourier, "CHUNK_ELEMENTS", 8)  # one clip per chunk
    chunked = loss(streams)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(torch.autograd.grad(chunked, streams)[0], grad_whole)
    # frames the delay never pairs: the first K - 1 of codebook 0, the last K - 1 of the last
    assert grad_whole[:, 0, :, :2].abs().sum() == 0 and grad_whole[:, 2, :, -2:].abs().sum() == 0
    assert grad_whole[:, 0, :, 2:].abs().sum() > 0


def test_module_exact_equals_dense_on_standardized_delayed_rows():
    streams = torch.randn(3, 3, 4, 12, dtype=torch.float64, requires_grad=True)
    loss = IndependenceLoss("exact", bandwidths=BANDWIDTHS, block_size=5)
    ours = loss(streams)
    rows, dims, _ = stream_rows(streams, "delay")
    reference = dense.exact_mmd(standardize_rows(rows), dims, BANDWIDTHS)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, streams)[0],
                               torch.autograd.grad(reference, streams)[0])


def test_rff_is_unbiased_for_exact_and_converges_as_features_grow():
    x, dims = _rows(n=40)
    exact = kernels.exact_mmd(*kernels.exact_stats(x, dims, SCALES)).sum()
    errors = {}
    for features in (16, 1024):
        estimates = []
        for seed in range(20):
            freqs = fourier.frequencies(x.shape[1], BANDWIDTHS, features,
                                        torch.Generator().manual_seed(seed)).double()
            estimates.append(_rff(_as_parts(x, dims), freqs, standardized=False))
        estimates = torch.stack(estimates)
        errors[features] = (estimates - exact).abs().mean()
        if features == 1024:
            torch.testing.assert_close(estimates.mean(), exact, rtol=0.02, atol=0)
    assert errors[1024] < errors[16] / 4, errors
