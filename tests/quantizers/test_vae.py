"""The continuous (VAE) bottleneck: the KL term, the reparameterization, streams as
channel groups, and the checks of its latent in place of codes."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok import IndependenceLoss
from mmdtok.quantizers import VAEBottleneck
from mmdtok.quantizers.vae import kl_divergence


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


@settings(max_examples=30, deadline=None)
@given(mean=st.floats(-3, 3), std=st.floats(0.05, 4), dim=st.integers(1, 6))
def test_kl_is_the_closed_form_of_two_gaussians(mean, std, dim):
    means, stds = torch.full((2, dim, 3), mean, dtype=torch.float64), torch.full(
        (2, dim, 3), std, dtype=torch.float64)
    expected = dim * (math.log(1 / std) + (std ** 2 + mean ** 2) / 2 - 0.5)
    assert float(kl_divergence(means, stds)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    bottleneck = VAEBottleneck(dim=8, min_std=1e-4)
    prior = torch.cat([torch.zeros(1, 8, 5), _inverse_softplus(torch.full((1, 8, 5), 1 - 1e-4))],
                      dim=1)
    assert float(bottleneck(prior).losses["kl"]) == pytest.approx(0, abs=1e-6)
    assert float(bottleneck(prior + 0.3).losses["kl"]) > 1e-3


def test_training_samples_around_the_mean_and_inference_returns_it():
    bottleneck = VAEBottleneck(dim=4, groups=2)
    z = torch.randn(2, 8, 20_000)
    mean, std = bottleneck.moments(z)
    sample = bottleneck.train()(z).quantized
    noise = (sample - mean) / std
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.var()) - 1) < 0.01
    assert not torch.equal(sample, bottleneck(z).quantized)  # a new draw each pass
    out = bottleneck.eval()(z)
    assert torch.equal(out.quantized, mean) and torch.equal(bottleneck.encode(z), mean)
    assert torch.equal(mean, z[:, :4]) and torch.allclose(std, F.softplus(z[:, 4:]) + 1e-4)


def test_the_reparameterized_sample_passes_gradients_to_mean_and_scale():
    bottleneck = VAEBottleneck(dim=3).train()
    z = torch.randn(1, 6, 10, requires_grad=True)
    bottleneck(z).quantized.sum().backward()
    assert torch.allclose(z.grad[:, :3], torch.ones(1, 3, 10))  # d sample / d mean = 1
    assert bool((z.grad[:, 3:] != 0).all())  # through std * noise


def test_streams_are_groups_of_the_mean_and_carry_the_independence_loss():
    bottleneck = VAEBottleneck(dim=8, groups=4).train()
    z = torch.randn(3, 16, 50, requires_grad=True)
    out = bottleneck(z)
    assert out.streams.shape == (3, 4, 2, 50) and out.codes.shape == (3, 0, 50)
    assert torch.equal(out.streams.reshape(3, 8, 50), z[:, :8].detach())
    loss = IndependenceLoss(estimator="exact", pattern="parallel", bandwidths="median")
    loss(out.streams).backward()
    assert z.grad[:, :8].abs().sum() > 0 and not z.grad[:, 8:].any()


def test_the_loss_tells_dependent_latent_groups_from_independent_ones():
    bottleneck = VAEBottleneck(dim=8, groups=2).eval()
    independent = torch.randn(8, 16, 40)
    copied = independent.clone()
    copied[:, 4:8] = copied[:, :4]  # group 1 equals group 0
    loss = IndependenceLoss(estimator="exact", pattern="parallel", bandwidths="median")
    assert float(loss(bottleneck(copied).streams)) > 3 * float(
        loss(bottleneck(independent).streams))


def test_the_latent_in_place_of_codes_is_checked():
    bottleneck = VAEBottleneck(dim=4)
    latent = torch.randn(1, 4, 6, dtype=torch.float16)
    assert bottleneck.decode(latent).dtype == torch.float32
    with pytest.raises(ValueError, match="integer codes belong to a quantized codec"):
        bottleneck.decode(torch.zeros(1, 4, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, D=4, T\]"):
        bottleneck.decode(torch.randn(1, 5, 6))
    with pytest.raises(ValueError, match="NaN"):
        bottleneck.decode(torch.full((1, 4, 6), math.nan))
    with pytest.raises(ValueError, match="D=8"):  # the input holds mean and scale
        bottleneck.encode(torch.randn(1, 4, 6))
    with pytest.raises(ValueError, match="no codebooks"):
        bottleneck.encode(torch.randn(1, 8, 6), n_q=2)
    with pytest.raises(ValueError, match="multiple of groups"):
        VAEBottleneck(dim=6, groups=4)
