"""IndependenceLoss as a user meets it: inputs, options, presets, other libraries."""

import pytest
import torch
from vector_quantize_pytorch import ResidualVQ as VqpResidualVQ

from mmdtok.losses import PRESETS, IndependenceLoss, straight_through_streams
from mmdtok.quantizers import FSQ, CodebookOptions, ProductVQ, ResidualVQ


def test_a_list_of_streams_of_different_widths_equals_the_stacked_form():
    streams = torch.randn(2, 3, 4, 10)
    loss = IndependenceLoss("exact")
    torch.testing.assert_close(loss(list(streams.unbind(1))), loss(streams))
    assert loss([torch.randn(2, 3, 10), torch.randn(2, 5, 10)]) >= 0


@pytest.mark.parametrize("quantizer", [ResidualVQ(8, 3, 16,
                                                  codebook=CodebookOptions(kmeans_iters=2)),
                                       ProductVQ(9, 3, 16,
                                                 codebook=CodebookOptions(kmeans_iters=2)),
                                       FSQ(8, (5, 5), 3)])
def test_the_loss_trains_the_encoder_of_any_mmdtok_quantizer(quantizer):
    encoder = torch.nn.Conv1d(4, quantizer.dim, 3, padding=1)
    out = quantizer.train()(encoder(torch.randn(2, 4, 12)))
    IndependenceLoss("exact")(out.streams).backward()
    assert encoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_gives_a_finite_loss(name):
    loss = IndependenceLoss.from_preset(name)
    assert loss.estimator == PRESETS[name]["estimator"]
    assert torch.isfinite(loss(torch.randn(4, 3, 6, 10)))


def test_paper_preset_is_much_larger_than_the_default_by_its_normalization_offset():
    """n = 2 clips instead of N = 2 * 8 rows: a constant offset of 2 (N - B) / (B (B - 1))
    per bandwidth dominates the published value."""
    streams = torch.randn(2, 3, 64, 10)
    paper = float(IndependenceLoss.from_preset("paper")(streams))
    offset = 6 * 2 * (16 - 2) / (2 * 1)
    assert abs(paper - offset) < 0.05 * offset
    assert abs(float(IndependenceLoss.from_preset("default")(streams))) < 1


def test_successive_calls_draw_new_permutations_and_a_seed_reproduces_them():
    streams = torch.randn(2, 3, 4, 10)
    first, second = IndependenceLoss(seed=1), IndependenceLoss(seed=1)
    values = [float(first(streams)) for _ in range(3)]
    assert len(set(values)) == 3
    assert [float(second(streams)) for _ in range(3)] == values


@pytest.mark.parametrize("streams, error, message", [
    (torch.randn(2, 3, 10), ValueError, r"\[B, K, D, T\]"),
    (torch.randn(2, 1, 4, 10), ValueError, "at least 2 codebooks"),
    (torch.randint(0, 4, (2, 3, 4, 10)), ValueError, "floating-point"),
    (torch.full((2, 3, 4, 10), float("nan")), ValueError, "NaN or infinite"),
    ([torch.randn(2, 4, 10), torch.randn(3, 4, 10)], ValueError, "share B and T"),
    ([torch.randn(2, 4, 10), torch.randn(4, 10)], ValueError, r"\[B, D_k, T\]"),
    (torch.randn(2, 4, 4, 3), ValueError, "at least 4 frames"),
    ("streams", TypeError, "expected a tensor"),
    (torch.randn(1, 3, 4, 3), ValueError, "at least 2 rows"),
])
def test_bad_streams_raise_errors_naming_the_problem(streams, error, message):
    with pytest.raises(error, match=message):
        IndependenceLoss()(streams)
    with pytest.raises(ValueError, match="2 clips"):
        IndependenceLoss.from_preset("paper")(torch.randn(1, 3, 4, 10))
    with pytest.raises(ValueError, match="at least 2 rows"):
        IndependenceLoss(bandwidths="median")(torch.randn(1, 3, 4, 3))
    assert IndependenceLoss("exact", bandwidths="median")(torch.randn(1, 3, 4, 3)) == 0


@pytest.mark.parametrize("options, message", [
    ({"estimator": "hsic"}, "estimator must be"),
    ({"pattern": "flatten"}, "pattern must be"),
    ({"bandwidths": (1.0, -2.0)}, "bandwidths must be"),
    ({"bandwidths": "mean"}, "bandwidths must be"),
    ({"normalization": "clips", "estimator": "exact"}, "use it with estimator='shuffle'"),
    ({"num_features": 0}, "num_features"),
    ({"block_size": 0}, "block_size"),
])
def test_bad_options_raise_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        IndependenceLoss(**options)
    with pytest.raises(ValueError, match="unknown preset"):
        IndependenceLoss.from_preset("musicgen")


def test_straight_through_streams_from_vector_quantize_pytorch_sum_to_its_output():
    # eval: in training that library looks the codes up after its EMA update
    quantizer = VqpResidualVQ(dim=8, num_quantizers=3, codebook_size=16).eval()
    z = torch.randn(2, 8, 12, requires_grad=True)
    quantized, _, _, all_codes = quantizer(z.transpose(1, 2), return_all_codes=True)
    streams = straight_through_streams(z, all_codes.permute(0, 1, 3, 2))  # [K, B, D, T]
    assert streams.shape == (2, 3, 8, 12)
    torch.testing.assert_close(streams.sum(1), quantized.transpose(1, 2), atol=1e-5, rtol=1e-5)
    IndependenceLoss("exact")(streams).backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape of z"):
        straight_through_streams(z, all_codes)
