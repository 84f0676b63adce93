"""ResidualVQ: codebook utilization, dead codes, quantizer dropout."""

import copy
import itertools

import torch

from mmdtok.quantizers import CodebookOptions, ResidualVQ
from tests.quantizers.mixtures import as_latent, gaussian_mixture

DIM = 16


def _train(quantizer, steps, rows_per_step=4096, clusters=1024, seed=0):
    for step in range(steps):
        rows = gaussian_mixture(rows_per_step, DIM, clusters, seed=seed)
        quantizer(as_latent(rows, batch=8))
    return quantizer


def test_utilization_is_above_90_percent_on_every_codebook_after_training():
    quantizer = _train(ResidualVQ(DIM, num_codebooks=4, codebook_size=256).train(), steps=30)
    codes = quantizer.eval().encode(as_latent(gaussian_mixture(16_384, DIM, 1024), batch=8))
    for k in range(4):
        used = codes[:, k].unique().numel() / 256
        assert used > 0.9, f"codebook {k} uses {used:.0%} of its codes"


def test_dead_codes_are_replaced_by_rows_of_the_current_batch():
    quantizer = ResidualVQ(DIM, num_codebooks=1, codebook_size=64,
                           codebook=CodebookOptions(kmeans_iters=5)).train()
    _train(quantizer, steps=1)
    codebook = quantizer.codebooks[0]
    # Move half the codes far from the data: they attract no row and must be revived.
    codebook.embed[:32] += 100.0
    codebook.cluster_size[:32] = 0.0
    rows = gaussian_mixture(4096, DIM, 1024)
    out = quantizer(as_latent(rows, batch=8))
    assert out.metrics["dead_codes_0"] >= 0.5
    revived = codebook.embed[:32]
    distance_to_data = torch.cdist(revived, rows, compute_mode="donot_use_mm_for_euclid_dist")
    distance_to_data = distance_to_data.min(dim=1).values
    assert distance_to_data.max() < 1e-5  # each revived code is one of the batch's rows


def test_relative_dead_code_threshold_scales_with_the_batch_and_absolute_does_not():
    relative = ResidualVQ(DIM, 1, 64,
                          codebook=CodebookOptions(dead_code_threshold=0.5)).codebooks[0]
    count = CodebookOptions(dead_code_threshold=2.0, dead_code_unit="count")
    absolute = ResidualVQ(DIM, 1, 64, codebook=count).codebooks[0]
    assert relative.dead_threshold(6400) == 4 * relative.dead_threshold(1600) == 50.0
    assert absolute.dead_threshold(6400) == absolute.dead_threshold(1600) == 2.0


def test_quantizer_dropout_keeps_a_prefix_of_stages_per_sample():
    quantizer = ResidualVQ(DIM, 4, 64,
                           codebook=CodebookOptions(kmeans_iters=5),
                           codebook_dropout="uniform").train()
    z = as_latent(gaussian_mixture(64 * 50, DIM, 128), batch=64)
    quantizer(z)
    before = copy.deepcopy(quantizer).eval()  # training updates codebooks after assignment
    out = quantizer(z)
    assert set(out.num_kept.tolist()) == {1, 2, 3, 4}  # 64 samples: every count appears
    for b in range(64):
        prefix = out.codes[b : b + 1, : int(out.num_kept[b])]
        torch.testing.assert_close(out.quantized[b : b + 1], before.decode(prefix),
                                   atol=1e-5, rtol=1e-5)


def test_quantizer_dropout_weights_set_the_distribution_of_kept_stages():
    quantizer = ResidualVQ(DIM, 3, 16,
                           codebook=CodebookOptions(kmeans_iters=1),
                           codebook_dropout=(0, 0, 1)).train()
    out = quantizer(torch.randn(32, DIM, 10))
    assert (out.num_kept == 3).all()


def test_streams_sum_to_the_undropped_quantized_latent():
    quantizer = ResidualVQ(DIM, 4, 64,
                           codebook=CodebookOptions(kmeans_iters=5),
                           codebook_dropout="uniform").train()
    z = torch.randn(4, DIM, 30)
    quantizer(z)
    before = copy.deepcopy(quantizer).eval()
    out = quantizer(z)
    full = before.decode(out.codes)
    torch.testing.assert_close(out.streams.sum(dim=1), full, atol=1e-5, rtol=1e-5)


def test_reconstruction_error_falls_with_every_added_stage():
    quantizer = _train(ResidualVQ(DIM, 4, 64).train(), steps=5)
    z = as_latent(gaussian_mixture(4096, DIM, 1024), batch=8)
    codes = quantizer.eval().encode(z)
    errors = [(quantizer.decode(codes[:, :k]) - z).square().mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
