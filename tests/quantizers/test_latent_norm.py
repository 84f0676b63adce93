"""Residual VQ with the latent norm: the codebooks see normalized rows, the output keeps the
latent's scale, and inference uses fixed statistics."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.quantizers import CodebookOptions, ResidualVQ
from mmdtok.quantizers.latent_norm import LatentNorm

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
        quantizer = ResidualVQ(DIM, num_codebooks=2, codebook_size=16,
                               codebook=CodebookOptions(kmeans_iters=3),
                               latent_norm=True).train()
        codes.append(quantizer(a * z + b).codes)
    assert torch.equal(codes[0], codes[1])


def test_the_loss_is_blind_to_the_latents_offset_and_scale_per_channel():
    """With the gradient through the batch statistics, any loss of the quantized output
    has a gradient that sums to zero over the rows of each channel (no push on the
    offset) and is orthogonal to the centred latent (no push on the scale)."""
    z = _latent(50.0, 2.0).double().requires_grad_()  # variance >> eps: scale-blind too
    quantizer = ResidualVQ(DIM, num_codebooks=4, codebook_size=64, latent_norm=True).double()
    out = quantizer.train()(z)
    assert out.quantized.abs().mean() < 3  # the normalized scale, not 50
    weights = torch.randn(out.quantized.shape, dtype=torch.float64)
    (weights * out.quantized).sum().backward()
    grad = z.grad.transpose(1, 2).reshape(-1, DIM)
    centred = (z.detach() - z.detach().mean(dim=(0, 2), keepdim=True)).transpose(1, 2)
    centred = centred.reshape(-1, DIM)
    assert grad.abs().max() > 1  # the loss does reach z
    torch.testing.assert_close(grad.sum(dim=0), torch.zeros(DIM, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    cosine = (grad * centred).sum(dim=0) / (grad.norm(dim=0) * centred.norm(dim=0))
    assert cosine.abs().max() < 1e-4


def test_inference_uses_the_moving_averages_so_batches_do_not_interact():
    quantizer = ResidualVQ(DIM, num_codebooks=2, codebook_size=32, latent_norm=True).train()
    for step in range(60):
        quantizer(_latent(3.0, 2.0, seed=step))
    running = quantizer.latent_norm
    assert torch.allclose(running.mean, torch.full((DIM,), 3.0), atol=0.3)
    assert torch.allclose(running.var, torch.full((DIM,), 4.0), rtol=0.3)
    a, b = _latent(3.0, 2.0, seed=100, batch=1), _latent(-40.0, 9.0, seed=101, batch=1)
    alone = quantizer.encode(a)  # the moving averages, in training mode too
    assert torch.equal(alone, quantizer.eval().encode(a))
    assert torch.equal(alone[0], quantizer.encode(torch.cat([a, b]))[0])
    normalized = (a - running.mean[:, None]) / (running.var[:, None] + 1e-5).sqrt()
    error = (quantizer.decode(alone) - normalized).pow(2).mean()
    assert error < 0.5 * normalized.var()  # decode gives the normalized latent


def test_batch_statistics_survive_a_large_offset_in_float32():
    rows = (1e4 + 1e-2 * torch.randn(4096, DIM, dtype=torch.float64)).float()
    mean, var = LatentNorm(DIM).batch_stats(rows)
    exact = rows.double()
    torch.testing.assert_close(mean.double(), exact.mean(0), rtol=0, atol=1e-3)
    assert torch.allclose(var.double(), exact.var(0, unbiased=False), rtol=0.02)
