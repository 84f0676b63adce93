"""FSQ adapter: same codes as vector-quantize-pytorch, interface extras."""

import torch
from vector_quantize_pytorch import FSQ as VqpFSQ

from mmdtok.quantizers import FSQ


def test_codes_equal_vector_quantize_pytorch_fsq_with_the_same_projection():
    ours = FSQ(dim=12, levels=(8, 5, 5), num_codebooks=2)
    theirs = VqpFSQ(levels=[8, 5, 5], dim=12, num_codebooks=2)
    theirs.project_in.load_state_dict(ours.project_in.state_dict())
    theirs.project_out.load_state_dict(ours.project_out.state_dict())
    z = torch.randn(3, 12, 25)
    out_theirs, indices = theirs(z.transpose(1, 2))
    out_ours = ours.eval()(z)
    assert torch.equal(out_ours.codes, indices.permute(0, 2, 1).long())
    torch.testing.assert_close(out_ours.quantized, out_theirs.transpose(1, 2))


def test_codebook_size_is_the_product_of_the_levels_and_every_code_is_reachable():
    quantizer = FSQ(dim=3, levels=(3, 5, 4 + 3), num_codebooks=1)
    assert quantizer.codebook_size == 105
    codes = quantizer.encode(torch.randn(1, 3, 20_000) * 3)
    assert codes.unique().numel() == 105


def test_a_prefix_decodes_with_the_missing_groups_at_zero():
    quantizer = FSQ(dim=6, levels=(5, 5), num_codebooks=3)  # no projections: D = K * L
    z = torch.randn(2, 6, 7)
    codes = quantizer.encode(z)
    partial = quantizer.decode(codes[:, :1])
    torch.testing.assert_close(partial[:, :2], quantizer.decode(codes)[:, :2])
    assert partial[:, 2:].abs().sum() == 0
