"""ProductVQ: groups, hierarchical dropout, lower-bitrate prefixes."""

import itertools

import torch

from mmdtok.quantizers import CodebookOptions, ProductVQ
from tests.quantizers.mixtures import as_latent, gaussian_mixture

DIM = 16


def test_reconstruction_error_falls_monotonically_with_the_codebooks_kept():
    """Correlated groups, trained briefly with hierarchical dropout: each added codebook
    lowers the error of the prefix decode (the missing groups decode as zeros)."""
    quantizer = ProductVQ(DIM, num_codebooks=4, codebook_size=64,
                          codebook_dropout="uniform").train()
    for step in range(10):
        quantizer(as_latent(gaussian_mixture(4096, DIM, 256, seed=1), batch=8))
    z = as_latent(gaussian_mixture(4096, DIM, 256, seed=1), batch=8)
    codes = quantizer.eval().encode(z)
    errors = [(quantizer.decode(codes[:, :k]) - z).square().mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors


def test_group_k_is_quantized_by_codebook_k_only():
    quantizer = ProductVQ(DIM, 4, 32,
                          codebook=CodebookOptions(kmeans_iters=3), codebook_dropout=None).train()
    z = torch.randn(2, DIM, 40)
    quantizer(z)
    z_changed = z.clone()
    z_changed[:, 4:8] += 10.0  # move group 1 only
    quantizer.eval()
    before, after = quantizer.encode(z), quantizer.encode(z_changed)
    assert torch.equal(before[:, [0, 2, 3]], after[:, [0, 2, 3]])
    assert not torch.equal(before[:, 1], after[:, 1])


def test_hierarchical_dropout_zeroes_the_groups_after_the_kept_prefix():
    quantizer = ProductVQ(DIM, 4, 32,
                          codebook=CodebookOptions(kmeans_iters=3),
                          codebook_dropout="uniform").train()
    out = quantizer(torch.randn(64, DIM, 10))
    groups = out.quantized.view(64, 4, DIM // 4, 10)
    for b in range(64):
        kept = int(out.num_kept[b])
        assert groups[b, kept:].abs().sum() == 0
        assert groups[b, :kept].abs().sum() > 0
    # streams are taken before dropout: every group is there
    assert (out.streams.abs().sum(dim=(2, 3)) > 0).all()


def test_dropped_groups_pass_no_gradient_to_the_latent():
    quantizer = ProductVQ(DIM, 4, 32,
                          codebook=CodebookOptions(kmeans_iters=3),
                          codebook_dropout=(1, 0, 0, 0)).train()
    z = torch.randn(2, DIM, 10, requires_grad=True)
    quantizer(z).quantized.sum().backward()
    assert z.grad[:, :4].abs().sum() > 0 and z.grad[:, 4:].abs().sum() == 0
