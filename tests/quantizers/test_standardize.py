"""Standardized residual VQ: the codebooks see standardized rows, the output keeps the
latent's scale, and inference uses fixed statistics."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.quantizers import ResidualVQ
from mmdtok.quantizers.standardize import RunningStandardizer

DIM = 8


def _latent(offset: float, scale: float, seed: int = 0, batch: int = 4, frames: int = 64):
    generator = torch.Generator().manual_seed(seed)
    return offset + scale * torch.randn(batch, DIM, frames, generator=generator)


@settings(max_examples=25, deadline=None)
@given(offset=st.floats(-100, 100), scale=st.floats(0.05, 100))
def test_codes_are_invariant_to_the_latent_offset_and_scale(offset, scale):
    """A fresh quantizer trained one step on z or on a * z + b assigns the same codes:
    the drift of an encoder's output is invisible to the codebooks."""
    z = _latent(0.0, 1.0)
    codes = []
    for a, b in ((1.0, 0.0), (scale, offset)):
        torch.manual_seed(0)
        quantizer = ResidualVQ(DIM, num_codebooks=2, codebook_size=16, kmeans_iters=3,
                               standardize=True).train()
        codes.append(quantizer(a * z + b).codes)
    assert torch.equal(codes[0], codes[1])


def test_training_rows_are_standardized_and_the_output_keeps_the_latent_scale():
    z = _latent(50.0, 0.01).requires_grad_()
    quantizer = ResidualVQ(DIM, num_codebooks=4, codebook_size=64, standardize=True).train()
    out = quantizer(z)
    streams_sum = out.streams.sum(dim=1)  # [B, D, T]: the codebooks' vectors, standardized
    assert streams_sum.abs().mean() < 5  # standardized scale, not 50
    assert (out.quantized - z).abs().max() < 0.05  # back at the latent's scale
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # straight through


def test_inference_uses_the_moving_averages_so_batches_do_not_interact():
    quantizer = ResidualVQ(DIM, num_codebooks=2, codebook_size=32, standardize=True).train()
    for step in range(20):
        quantizer(_latent(3.0, 2.0, seed=step))
    quantizer.eval()
    a, b = _latent(3.0, 2.0, seed=100, batch=1), _latent(-40.0, 9.0, seed=101, batch=1)
    alone = quantizer.encode(a)
    together = quantizer.encode(torch.cat([a, b]))
    assert torch.equal(alone[0], together[0])
    decoded = quantizer.decode(alone)
    assert (decoded - a).pow(2).mean() < a.var()  # reconstructs at the latent's scale
    running = quantizer.standardizer
    assert torch.allclose(running.mean, torch.full((DIM,), 3.0), atol=0.3)
    assert torch.allclose(running.var, torch.full((DIM,), 4.0), rtol=0.3)


def test_batch_statistics_are_exact_in_float64_despite_a_large_offset():
    rows = 1e4 + 1e-2 * torch.randn(4096, DIM, dtype=torch.float64)
    mean, var = RunningStandardizer(DIM).batch_stats(rows.float())
    torch.testing.assert_close(mean.double(), rows.float().double().mean(0), rtol=0, atol=1e-3)
    assert torch.allclose(var.double(), rows.var(0, unbiased=False), rtol=0.05)
