"""Every quantizer honours the contract of mmdtok.quantizers.Quantizer."""

import dataclasses

import pytest
import torch

from mmdtok.quantizers import (
    FSQ,
    CodebookOptions,
    IdentityQuantizer,
    ProductVQ,
    Quantizer,
    QuantizerOutput,
    ResidualVQ,
    VAEBottleneck,
)

DIM, BATCH, FRAMES = 16, 3, 20

FACTORIES = {
    "rvq": lambda: ResidualVQ(DIM, num_codebooks=4, codebook_size=32,
                              codebook=CodebookOptions(kmeans_iters=5)),
    "rvq_dropout": lambda: ResidualVQ(DIM, 4, 32,
                                      codebook=CodebookOptions(kmeans_iters=5),
                                      codebook_dropout="uniform"),
    "rvq_learned": lambda: ResidualVQ(DIM, 4, 32,
                                      codebook=CodebookOptions(kmeans_iters=5, decay=None)),
    "pvq": lambda: ProductVQ(DIM, num_codebooks=4, codebook_size=32,
                             codebook=CodebookOptions(kmeans_iters=5)),
    "pvq_learned": lambda: ProductVQ(DIM, 4, 32,
                                     codebook=CodebookOptions(kmeans_iters=5, decay=None)),
    "fsq": lambda: FSQ(DIM, levels=(5, 5, 3), num_codebooks=2),
    "fsq_dropout": lambda: FSQ(DIM, (7, 5), num_codebooks=3, codebook_dropout="uniform"),
}
DISCRETE = list(FACTORIES)


def _latent():
    return torch.randn(BATCH, DIM, FRAMES)


@pytest.fixture(params=DISCRETE)
def name(request) -> str:
    return request.param


@pytest.fixture
def quantizer(name) -> Quantizer:
    return FACTORIES[name]()


def test_output_is_a_frozen_dataclass_with_the_documented_shapes_and_types(quantizer):
    out = quantizer.train()(_latent())
    assert isinstance(out, QuantizerOutput)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.codes = None
    k = quantizer.num_codebooks
    assert out.quantized.shape == (BATCH, DIM, FRAMES)
    assert out.codes.shape == (BATCH, k, FRAMES) and out.codes.dtype == torch.int64
    assert out.streams.shape[:2] == (BATCH, k) and out.streams.shape[-1] == FRAMES
    assert out.num_kept.shape == (BATCH,) and out.num_kept.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < quantizer.codebook_size
    for name, value in {**out.losses, **out.metrics}.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    assert {f"perplexity_{i}" for i in range(k)} <= set(out.metrics)


def test_decode_of_encode_equals_the_quantized_output_in_eval_mode(quantizer):
    z = _latent()
    quantizer.train()(z)  # initialize and update the codebooks once
    quantizer.eval()
    out = quantizer(z)
    codes = quantizer.encode(z)
    assert torch.equal(codes, out.codes)
    torch.testing.assert_close(quantizer.decode(codes), out.quantized, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_input_through_quantized_and_streams(quantizer):
    z = _latent().requires_grad_()
    out = quantizer.train()(z)
    (grad_q,) = torch.autograd.grad(out.quantized.square().sum(), z, retain_graph=True)
    (grad_s,) = torch.autograd.grad(out.streams.square().sum(), z)
    assert grad_q.abs().sum() > 0 and grad_s.abs().sum() > 0


def test_learned_codebooks_get_a_codebook_loss_with_a_gradient():
    quantizer = ResidualVQ(DIM, 2, 16, codebook=CodebookOptions(kmeans_iters=2, decay=None)).train()
    out = quantizer(_latent())
    out.losses["codebook"].backward()
    assert quantizer.codebooks[0].embed.grad.abs().sum() > 0


def test_encode_with_n_q_is_a_prefix_of_the_full_codes(quantizer):
    z = _latent()
    quantizer.train()(z)
    quantizer.eval()
    full = quantizer.encode(z)
    for n_q in range(1, quantizer.num_codebooks + 1):
        assert torch.equal(quantizer.encode(z, n_q=n_q), full[:, :n_q])
        assert quantizer.decode(full[:, :n_q]).shape == (BATCH, DIM, FRAMES)


def test_state_dict_round_trip_gives_the_same_codes(name, quantizer):
    z = _latent()
    quantizer.train()(z)
    fresh = FACTORIES[name]()
    fresh.load_state_dict(quantizer.state_dict())
    assert torch.equal(fresh.eval().encode(z), quantizer.eval().encode(z))


@pytest.mark.parametrize("bad, message", [
    (torch.randn(DIM, FRAMES), "rank 3"),
    (torch.randn(BATCH, DIM + 1, FRAMES), "dimension D=16"),
    (torch.randint(0, 5, (BATCH, DIM, FRAMES)), "floating-point"),
])
def test_bad_latents_raise_value_errors_naming_the_problem(quantizer, bad, message):
    with pytest.raises(ValueError, match=message):
        quantizer(bad)
    with pytest.raises(ValueError, match=message):
        quantizer.encode(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_latent_is_refused_by_encode_and_changes_no_state_in_training(
        quantizer, value):
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantizer.encode(torch.full((BATCH, DIM, FRAMES), value))
    quantizer.train()(torch.randn(BATCH, DIM, FRAMES))  # initialized on a finite batch
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    bad = torch.randn(BATCH, DIM, FRAMES)
    bad[0, :, 3] = value
    quantizer(bad)
    after = quantizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "num_updates" not in k)


def test_a_non_tensor_raises_a_type_error(quantizer):
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantizer([[1.0]])
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantizer.decode([[[0]]])


def test_bad_codes_and_n_q_raise_value_errors(quantizer):
    k, size = quantizer.num_codebooks, quantizer.codebook_size
    quantizer.train()(_latent())
    with pytest.raises(ValueError, match="integer codes"):
        quantizer.decode(torch.zeros(1, k, 5))
    with pytest.raises(ValueError, match="rank 3"):
        quantizer.decode(torch.zeros(k, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=f"1 to {k} codebooks"):
        quantizer.decode(torch.zeros(1, k + 1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        quantizer.decode(torch.full((1, k, 5), size, dtype=torch.long))
    with pytest.raises(ValueError, match="n_q must be"):
        quantizer.encode(_latent(), n_q=k + 1)


def test_identity_quantizer_passes_the_latent_through_as_k_streams():
    z = _latent()
    out = IdentityQuantizer(DIM, num_codebooks=4)(z)
    assert out.quantized is z
    assert torch.equal(out.streams.reshape(BATCH, DIM, FRAMES), z)
    assert out.codes.shape == (BATCH, 4, FRAMES)
    with pytest.raises(ValueError, match="cannot decode"):
        IdentityQuantizer(DIM).decode(out.codes)


@pytest.mark.parametrize("build, message", [
    (lambda: ProductVQ(10, num_codebooks=4), "multiple of num_codebooks"),
    (lambda: ResidualVQ(8, num_codebooks=0), "num_codebooks must be"),
    (lambda: ResidualVQ(8, 2, 16, codebook=CodebookOptions(decay=1.0)), "decay must be"),
    (lambda: ResidualVQ(8, 2, 16,
                        codebook=CodebookOptions(dead_code_unit="percent")), "dead_code_unit"),
    (lambda: ResidualVQ(8, 2, 16, codebook_dropout="often"), "codebook dropout"),
    (lambda: ProductVQ(8, 2, 16, codebook_dropout=(1.0, -1.0)), "non-negative"),
    (lambda: ProductVQ(8, 2, 16, codebook_dropout=(1.0,)), "2 non-negative"),
    (lambda: FSQ(8, levels=(2, 5)), "levels must be"),
])
def test_bad_constructor_arguments_raise_value_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("build, valid", [
    (lambda: ResidualVQ(DIM, 4, 32), [1, 2, 3, 4]),
    (lambda: IdentityQuantizer(DIM, 2), [1, 2]),
    (lambda: VAEBottleneck(DIM, groups=4), [4]),  # a latent is one whole
])
def test_n_q_has_one_rule_for_discrete_and_continuous_quantizers(build, valid):
    quantizer = build()
    assert list(quantizer.prefixes()) == valid
    assert quantizer.resolve_n_q(None) == quantizer.num_codebooks
    for n_q in range(-1, quantizer.num_codebooks + 2):
        if n_q in valid:
            assert quantizer.resolve_n_q(n_q) == n_q
        else:
            with pytest.raises(ValueError, match="n_q must be") as refused:
                quantizer.resolve_n_q(n_q)
            assert "--" not in str(refused.value)  # the library never names a CLI flag
    for wrong in (2.0, True, "2"):
        with pytest.raises(TypeError, match="n_q must be an integer"):
            quantizer.resolve_n_q(wrong)
