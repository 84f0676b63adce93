"""The independence loss does not depend on the scale or the float type of the streams."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok import IndependenceLoss


def dependent_streams(dtype=torch.float32) -> torch.Tensor:
    """[8, 2, 4, 16]: codebook 1 is codebook 0 plus a little noise."""
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(8, 4, 16, generator=generator)
    second = first + 0.3 * torch.randn(8, 4, 16, generator=generator)
    return torch.stack([first, second], dim=1).to(dtype)


@settings(max_examples=24, deadline=None)
@given(exponent=st.sampled_from([-20, -12, -10, -4, 0, 4, 12, 20]),
       estimator=st.sampled_from(["exact", "shuffle"]))
def test_scaling_the_streams_changes_neither_the_loss_nor_the_gradient_direction(
        exponent, estimator):
    streams = dependent_streams()
    reference = IndependenceLoss(estimator, pattern="parallel", bandwidths="median", seed=0)
    scaled_loss = IndependenceLoss(estimator, pattern="parallel", bandwidths="median", seed=0)
    base = reference(streams)
    scale = 10.0 ** exponent
    scaled = (streams * scale).requires_grad_()
    value = scaled_loss(scaled)
    base = base.detach()
    assert float(base) > 0 and value.item() == pytest.approx(float(base), rel=1e-3)
    value.backward()
    gradient = scaled.grad * scale  # d loss / d (unit-scale streams)
    assert torch.isfinite(gradient).all() and gradient.abs().max() > 0


def test_float16_streams_of_magnitude_200_give_the_float32_loss():
    streams = dependent_streams() * 200
    half = streams.half().requires_grad_()
    value = IndependenceLoss("exact", pattern="parallel", bandwidths="median", seed=0)(half)
    expected = IndependenceLoss("exact", pattern="parallel", bandwidths="median",
                                seed=0)(half.detach().float())
    assert value.item() > 0 and value.item() == pytest.approx(float(expected), rel=1e-3)
    value.backward()
    assert half.grad.abs().max() > 0


def test_empty_streams_and_zero_dimensions_are_refused():
    loss = IndependenceLoss("exact", pattern="parallel")
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(0, 2, 4, 16))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(4, 2, 4, 0))
    with pytest.raises(ValueError, match="D >= 1"):
        loss([torch.randn(4, 3, 16), torch.randn(4, 0, 16)])
