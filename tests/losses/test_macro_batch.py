"""MacroBatchIndependence: accumulate, re-encode with checkpointing, return the loss of the
whole macro-batch for one weighted backward by the caller."""

import pytest
import torch

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.quantizers import CodebookOptions, ResidualVQ


def _model():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv1d(3, 16, 3, padding=1), torch.nn.ELU(),
                                  torch.nn.Conv1d(16, 8, 1))
    quantizer = ResidualVQ(8, num_codebooks=3, codebook_size=16,
                           codebook=CodebookOptions(kmeans_iters=2))
    quantizer(encoder(torch.randn(4, 3, 20)))  # initialize the codebooks
    quantizer.eval()  # re-encoding must not update the codebooks

    def encode_streams(audio):
        return quantizer(encoder(audio)).streams

    return encoder, encode_streams


def _batches(count):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 20, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("use_checkpoint", [True, False])
def test_gradient_is_the_weighted_loss_gradient_on_the_concatenated_macro_batch(use_checkpoint):
    encoder, encode_streams = _model()
    macro = MacroBatchIndependence(encode_streams, IndependenceLoss("exact"), every=4,
                                   use_checkpoint=use_checkpoint)
    batches = _batches(4)
    values = [macro.step(batch) for batch in batches]
    assert values[:3] == [None, None, None] and values[3] is not None
    assert macro.pending == 0
    assert all(p.grad is None for p in encoder.parameters())  # the caller runs backward
    (1e3 * values[3]).backward()
    ours = [p.grad.clone() for p in encoder.parameters()]

    encoder.zero_grad()
    direct = IndependenceLoss("exact")(encode_streams(torch.cat(batches)))
    (1e3 * direct).backward()
    torch.testing.assert_close(values[3].detach(), direct.detach())
    # The whole gradient, up to float32 noise on its own scale (the last bias, which the
    # standardization makes irrelevant, has a gradient of pure rounding noise).
    mine = torch.cat([g.flatten() for g in ours])
    reference = torch.cat([p.grad.flatten() for p in encoder.parameters()])
    torch.testing.assert_close(mine, reference, rtol=1e-4,
                               atol=1e-5 * float(reference.abs().max()))


def test_flush_runs_on_a_partial_macro_batch_and_lists_work_as_streams():
    encoder, encode_streams = _model()
    macro = MacroBatchIndependence(lambda x: list(encode_streams(x).unbind(1)), every=10)
    assert macro.flush() is None
    for batch in _batches(3):
        assert macro.step(batch) is None
    assert macro.pending == 3
    value = macro.flush()
    assert value is not None and macro.pending == 0
    value.backward()
    assert any(p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every must be"):
        MacroBatchIndependence(lambda x: x, every=0)
