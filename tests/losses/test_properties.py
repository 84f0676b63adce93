"""Laws of the independence loss, checked with hypothesis."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.losses import IndependenceLoss

BANDWIDTHS = (0.5, 2.0, 8.0)
seeds = st.integers(0, 2**31 - 1)
# B, K, D, T with at least 2 rows (B * (T - K + 1)) under the delay pattern
shapes = st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(1, 3), st.integers(5, 12))


def _streams(shape, seed, dependent=False):
    batch, k, d, t = shape
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, k, d, t, generator=generator, dtype=torch.float64)
    if dependent:
        x[:, 1] = x[:, 1] + x[:, 0]
    return x


def _loss(estimator, **options):
    return IndependenceLoss(estimator, bandwidths=BANDWIDTHS, **options)


@settings(max_examples=25, deadline=None)
@given(shapes, seeds, st.sampled_from(["exact", "rff"]), st.booleans())
def test_v_statistic_estimators_are_non_negative(shape, seed, estimator, dependent):
    assert _loss(estimator)(_streams(shape, seed, dependent)) >= -1e-12


@settings(max_examples=25, deadline=None)
@given(shapes, seeds, st.sampled_from(["exact", "rff"]))
def test_permuting_rows_changes_nothing(shape, seed, estimator):
    streams = _streams(shape, seed, dependent=True)
    frames = torch.randperm(shape[-1], generator=torch.Generator().manual_seed(seed))
    samples = torch.randperm(shape[0], generator=torch.Generator().manual_seed(seed + 1))
    permuted = streams[samples][..., frames]  # rows of the parallel pattern, reordered
    original = _loss(estimator, pattern="parallel")(streams)
    torch.testing.assert_close(_loss(estimator, pattern="parallel")(permuted), original)


@settings(max_examples=25, deadline=None)
@given(shapes, seeds)
def test_reordering_codebooks_changes_nothing(shape, seed):
    streams = _streams(shape, seed, dependent=True)
    order = torch.randperm(shape[1], generator=torch.Generator().manual_seed(seed))
    loss = _loss("exact", pattern="parallel")
    torch.testing.assert_close(loss(streams[:, order]), loss(streams))


@settings(max_examples=25, deadline=None)
@given(shapes, seeds, st.sampled_from(["exact", "shuffle"]))
def test_per_codebook_translation_and_rotation_change_nothing_without_standardization(
        shape, seed, estimator):
    streams = _streams(shape, seed, dependent=True)
    generator = torch.Generator().manual_seed(seed)
    _, k, d, _ = shape
    rotations = torch.linalg.qr(torch.randn(k, d, d, generator=generator,
                                            dtype=torch.float64))[0]
    shifts = 10 * torch.randn(k, d, 1, generator=generator, dtype=torch.float64)
    moved = torch.einsum("kij,bkjt->bkit", rotations, streams) + shifts
    original = _loss(estimator, standardize=False, seed=7)(streams)
    torch.testing.assert_close(_loss(estimator, standardize=False, seed=7)(moved), original)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 3), st.integers(2, 5), st.integers(1, 3), seeds, st.booleans())
def test_exact_is_zero_on_a_cartesian_product_sample(k, values, d, seed, standardize):
    """Rows = every combination of each codebook's values: independent by construction."""
    generator = torch.Generator().manual_seed(seed)
    marginals = [torch.randn(values, d, generator=generator, dtype=torch.float64)
                 for _ in range(k)]
    grid = torch.cartesian_prod(*[torch.arange(values)] * k)  # [values^k, k]
    streams = torch.stack([marginals[j][grid[:, j]].t() for j in range(k)])[None]  # [1,K,D,T]
    loss = IndependenceLoss("exact", "parallel", standardize, bandwidths=BANDWIDTHS)
    assert abs(float(loss(streams))) <= 1e-6


@pytest.mark.parametrize("bandwidths", [BANDWIDTHS, (0.1, 1, 5, 10, 20, 50), "median"])
def test_a_copied_codebook_scores_clearly_higher_than_independent_ones(bandwidths):
    """1,600 rows: the V-statistic's O(1/N) bias on independent codebooks is small."""
    generator = torch.Generator().manual_seed(0)
    independent = torch.randn(8, 3, 4, 200, generator=generator, dtype=torch.float64)
    copied = independent.clone()
    copied[:, 2] = copied[:, 0]
    loss = IndependenceLoss("exact", "parallel", bandwidths=bandwidths)
    assert loss(copied) > 10 * loss(independent)


def test_the_mean_of_shuffle_over_seeds_approaches_exact_like_one_over_n():
    gaps = {}
    for frames in (16, 64):
        streams = _streams((2, 3, 2, frames), seed=1, dependent=True)
        exact = float(_loss("exact", pattern="parallel")(streams))
        shuffle = _loss("shuffle", pattern="parallel", seed=3)
        mean = sum(float(shuffle(streams)) for _ in range(400)) / 400
        gaps[2 * frames] = abs(mean - exact)
    # N grows 4x: the gap shrinks about 4x (bias O(1/N)); allow for the seeds' noise.
    assert gaps[128] < gaps[32] / 2.5, gaps


def test_delay_pairs_codebook_k_at_frame_t_minus_k():
    streams = _streams((2, 3, 2, 10), seed=5, dependent=True)
    shifted = torch.stack([streams[:, k, :, 2 - k : 10 - k] for k in range(3)], dim=1)
    torch.testing.assert_close(_loss("exact", pattern="delay")(streams),
                               _loss("exact", pattern="parallel")(shifted))


def test_delay_sees_a_lagged_copy_that_parallel_misses():
    """Codebook 1 runs one frame ahead, z_1[t] = z_0[t + 1]: a delay-pattern LM predicts
    z_0[t] together with z_1[t - 1] = z_0[t], a copy; within one frame they are
    independent."""
    base = torch.randn(4, 1, 3, 201, dtype=torch.float64)
    streams = torch.cat([base[..., :-1], base[..., 1:]], dim=1)
    delay, parallel = _loss("exact", pattern="delay"), _loss("exact", pattern="parallel")
    assert delay(streams) > 10 * parallel(streams)
