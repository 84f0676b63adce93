"""The helpers of mmdtok.testing check what they say they check."""

import pytest
import torch

from mmdtok.models import CodecConfig, SEANetConfig
from mmdtok.testing import assert_same_codes_up_to_ties, trained_codebooks


def _normed_codec(seed=0):
    config = CodecConfig(name="tiny-normed", sample_rate=16_000, seanet=SEANetConfig(
        dimension=8, n_filters=4, ratios=(4, 2), lstm_layers=1), quantizer={
        "kind": "rvq", "num_codebooks": 2, "codebook_size": 16, "latent_norm": True})
    return trained_codebooks(config, seed=seed)


def test_a_tie_of_a_latent_normalizing_quantizer_is_judged_in_its_normalized_space():
    """A tie made in the normalized space (a second code mirrored about the frame's
    normalized latent): equally near there, not in the encoder's raw space. The helper
    must accept it, and refuse the same swap to a code that is not as near."""
    codec = _normed_codec()
    latent = torch.randn(8, 20) * 3 + 1  # far from the identity normalization
    codes = codec.quantizer.encode(latent[None])[0]
    norm, embed = codec.quantizer.latent_norm, codec.quantizer.codebooks[0].embed
    t, first = 5, int(codes[0, 5])
    other = (first + 1) % 16
    residual = norm.fixed(latent.T).T[:, t]
    with torch.no_grad():
        embed[other] = 2 * residual - embed[first]  # as near as the chosen code
    swapped = codes.clone()
    swapped[0, t] = other
    assert_same_codes_up_to_ties(codec, latent, codes, swapped)
    with torch.no_grad():
        embed[other] = embed[first] + 10.0  # far: a real difference
    with pytest.raises(AssertionError, match="not a tie"):
        assert_same_codes_up_to_ties(codec, latent, codes, swapped)


def test_trained_codebooks_gives_equal_copies_and_the_same_random_state():
    first = _normed_codec(seed=2)  # a seed no other test asks for: computed here
    after_first = torch.rand(4)
    second = _normed_codec(seed=2)  # from the cache
    assert torch.equal(torch.rand(4), after_first)  # as if computed again
    assert first is not second and first.fingerprint() == second.fingerprint()
    with torch.no_grad():
        second.quantizer.codebooks[0].embed.zero_()
    assert _normed_codec(seed=2).fingerprint() == first.fingerprint()
    assert _normed_codec(seed=3).fingerprint() != first.fingerprint()
