"""Laws of the codebook patterns: round trips, layouts, aligned steps."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok import patterns

sizes = st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 40))  # B, K, T


def _codes(batch, num_codebooks, length):
    return torch.randint(0, 1000, (batch, num_codebooks, length))


def _streams(batch, num_codebooks, length, dim=3):
    return torch.randn(batch, num_codebooks, dim, length)


@settings(max_examples=60, deadline=None)
@given(sizes, st.sampled_from(patterns.PATTERNS), st.booleans())
def test_revert_of_apply_is_identity_for_codes_and_streams(size, pattern, as_streams):
    x = _streams(*size) if as_streams else _codes(*size)
    laid_out = patterns.apply_pattern(x, pattern, pad=-7)
    assert laid_out.shape[-1] == patterns.num_steps(pattern, size[1], size[2])
    assert torch.equal(patterns.revert_pattern(laid_out, pattern, size[1]), x)


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_delay_puts_codebook_k_at_step_t_plus_k_and_pads_the_rest(size):
    _, num_codebooks, length = size
    codes = _codes(*size)
    delayed = patterns.delay(codes, pad=-1)
    for k in range(num_codebooks):
        assert torch.equal(delayed[:, k, k : k + length], codes[:, k])
        assert (delayed[:, k, :k] == -1).all()
        assert (delayed[:, k, k + length :] == -1).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 30))
def test_aligned_delay_pairs_codebook_k_at_frame_t_minus_k(batch, num_codebooks, extra):
    length = num_codebooks + extra
    streams = _streams(batch, num_codebooks, length)
    steps = patterns.aligned(streams, "delay")
    assert steps.shape == (batch, num_codebooks, 3, length - num_codebooks + 1)
    for s in range(steps.shape[-1]):
        t = s + num_codebooks - 1
        for k in range(num_codebooks):
            assert torch.equal(steps[:, k, :, s], streams[:, k, :, t - k])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 30))
def test_aligned_delay_equals_the_full_columns_of_the_delay_layout(num_codebooks, extra):
    length = num_codebooks + extra
    codes = _codes(2, num_codebooks, length)
    full_columns = patterns.delay(codes)[..., num_codebooks - 1 : length]
    assert torch.equal(patterns.aligned(codes, "delay"), full_columns)


def test_delay_layout_matches_the_documented_diagram():
    codes = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]])
    expected = torch.tensor([[[0, 1, 2, 3, -1, -1], [-1, 10, 11, 12, 13, -1],
                              [-1, -1, 20, 21, 22, 23]]])
    assert torch.equal(patterns.delay(codes), expected)


def test_flatten_interleaves_frame_by_frame():
    codes = torch.tensor([[[0, 1], [10, 11], [20, 21]]])
    assert patterns.flatten(codes).tolist() == [[[0, 10, 20, 1, 11, 21]]]
    streams = torch.arange(2 * 3 * 2).view(1, 2, 3, 2)  # [B, K, D, T]
    flat = patterns.flatten(streams)
    assert flat.shape == (1, 1, 3, 4)
    assert torch.equal(flat[0, 0, :, 1], streams[0, 1, :, 0])  # step 1 = codebook 1, frame 0


def test_parallel_is_the_identity_and_aligned_keeps_every_frame():
    codes = _codes(2, 4, 9)
    assert patterns.apply_pattern(codes, "parallel") is codes
    assert patterns.aligned(codes, "parallel") is codes


def test_default_padding_is_minus_one_for_codes_and_zero_for_streams():
    assert patterns.delay(_codes(1, 2, 3))[0, 1, 0] == -1
    assert patterns.delay(_streams(1, 2, 3))[0, 1, :, 0].abs().sum() == 0


@pytest.mark.parametrize("call, message", [
    (lambda: patterns.apply_pattern(_codes(1, 2, 3), "zigzag"), "unknown pattern"),
    (lambda: patterns.aligned(_codes(1, 4, 3), "delay"), "at least 4 frames"),
    (lambda: patterns.aligned(_codes(1, 4, 6), "flatten"), "not 'flatten'"),
    (lambda: patterns.delay(torch.zeros(3, 4)), "codes \\[B, K, T\\]"),
    (lambda: patterns.unflatten(torch.zeros(1, 1, 7), 2), "do not split"),
    (lambda: patterns.undelay(torch.zeros(1, 4, 6), length=4), "length must be"),
])
def test_bad_inputs_raise_value_errors_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
