import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from mmdtok.models.layers import (
    Conv1d,
    ConvTranspose1d,
    SkipLSTM,
    Snake,
    activation,
    conv_padding,
    fold_weight_norm,
    pad1d,
    snake,
    transposed_trim,
)


@given(length=st.integers(1, 500), kernel=st.integers(1, 16), stride=st.integers(1, 8),
       causal=st.booleans())
def test_conv_padding_gives_ceil_length_over_stride_frames(length, kernel, stride, causal):
    kernel = max(kernel, stride)
    left, right = conv_padding(length, kernel, stride, causal)
    assert left >= 0 and right >= 0
    frames = (length + left + right - kernel) // stride + 1
    assert frames == math.ceil(length / stride)
    assert left == (kernel - stride if causal else kernel - stride - (kernel - stride) // 2)


def test_reflection_of_a_short_input_pads_with_zeros_first():
    x = torch.tensor([[[1.0, 2.0]]])
    out = pad1d(x, 3, 1, "reflect")
    assert out.shape[-1] == 6
    # [1, 2] + two zeros = [1, 2, 0, 0], reflected by 3 on the left (0, 0, 2) and 1 on
    # the right, then the two zeros dropped again from the end.
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 2.0, 1.0, 2.0, 0.0]))


@pytest.mark.parametrize("causal", [False, True])
def test_transposed_conv_gives_stride_times_frames(causal):
    layer = ConvTranspose1d(4, 2, 8, stride=4, causal=causal)
    assert layer(torch.randn(2, 4, 13)).shape == (2, 2, 52)
    left, right = transposed_trim(8, 4, causal)
    assert left + right == 4 and (right == 4 if causal else right == 2)


def test_folding_weight_norm_keeps_the_output_and_removes_the_parametrization():
    conv, up = Conv1d(3, 5, 7, stride=2), ConvTranspose1d(5, 3, 4, stride=2)
    with torch.no_grad():
        conv.conv.parametrizations.weight.original0.mul_(3.0)
    x = torch.randn(2, 3, 50)
    before = up(conv(x))
    fold_weight_norm(conv), fold_weight_norm(up)
    assert not hasattr(conv.conv, "parametrizations")
    assert set(conv.state_dict()) == {"conv.weight", "conv.bias"}
    torch.testing.assert_close(up(conv(x)), before, atol=1e-6, rtol=1e-6)


def test_conv_matches_explicit_reflect_padding_then_convolution():
    layer = Conv1d(2, 3, 5, dilation=2, norm="none")
    x = torch.randn(1, 2, 31)
    expected = F.conv1d(F.pad(x, (4, 4), mode="reflect"), layer.conv.weight, layer.conv.bias,
                        dilation=2)
    torch.testing.assert_close(layer(x), expected)


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 12), min_size=1, max_size=4))
def test_lstm_state_carried_across_pieces_equals_one_pass(cuts):
    lstm = SkipLSTM(6, num_layers=2).eval()
    x = torch.randn(2, 6, sum(cuts))
    with torch.no_grad():
        whole = lstm(x)
        state, pieces, start = None, [], 0
        for cut in cuts:
            y, state = lstm.step(x[..., start : start + cut], state)
            pieces.append(y)
            start += cut
    torch.testing.assert_close(torch.cat(pieces, dim=-1), whole, atol=1e-6, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.05, 20), seed=st.integers(0, 1000))
def test_snake_adds_periodic_bumps_between_zero_and_one_over_alpha(alpha, seed):
    torch.manual_seed(seed)
    x = 10 * torch.randn(1000, dtype=torch.float64)
    bump = snake(x, torch.tensor(alpha, dtype=torch.float64)) - x
    assert bump.min() >= 0 and bump.max() <= 1 / alpha * (1 + 1e-9)
    zeros = torch.arange(-5, 6, dtype=torch.float64) * math.pi / alpha  # sin(alpha x) = 0
    assert (snake(zeros, torch.tensor(alpha, dtype=torch.float64)) - zeros).abs().max() < 1e-9
    period = math.pi / alpha
    torch.testing.assert_close(snake(x + period, torch.tensor(alpha, dtype=torch.float64)),
                               bump + x + period)


def test_snake_learns_one_frequency_per_channel():
    layer = Snake(3)
    x = torch.randn(2, 3, 50)
    torch.testing.assert_close(layer(x), snake(x, torch.ones(1, 3, 1)))
    layer(x).sum().backward()
    assert layer.alpha.grad.shape == (1, 3, 1) and layer.alpha.grad.abs().min() > 0
    assert isinstance(activation("elu", 3), torch.nn.ELU)
    with pytest.raises(ValueError, match="activation must be one of"):
        activation("relu", 3)
