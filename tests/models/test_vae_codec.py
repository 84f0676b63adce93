"""A codec with a continuous (VAE) bottleneck: latents in place of codes through the
whole path (one pass, chunked long files, model folders)."""

import pytest
import torch

from mmdtok import Codec
from mmdtok.models import ChunkSettings, decode_many, encode_many
from mmdtok.testing import notes, tiny_vae


@pytest.fixture(scope="module")
def codec():
    return tiny_vae(seed=1).for_inference()


def test_the_encoder_emits_mean_and_scale_and_the_codec_encodes_the_mean(codec):
    audio = notes(0.3, 16_000, channels=2)[None]
    assert codec.continuous and codec.latent_dim == 16 and codec.codebook_size == 0
    with torch.no_grad():
        moments = codec.encoder(audio)
    assert moments.shape == (1, 32, 150)
    latent = codec.encode(audio)
    assert torch.equal(latent, moments[:, :16])
    with torch.no_grad():  # the same (inference) path: the same values
        assert torch.equal(codec.encode_streams(audio).reshape(1, 16, 150), latent)
    assert codec.decode(latent, length=audio.shape[-1]).shape == audio.shape
    with pytest.raises(ValueError, match="no codebooks"):
        codec.encode(audio, n_q=2)


def test_chunked_encoding_and_decoding_of_a_long_file_equal_one_pass(codec):
    audio = notes(6.0, 16_000, seed=3, channels=2)
    settings = ChunkSettings(window=230, piece=37, max_batch=4)
    latent = encode_many(codec, [audio], settings=settings)[0]
    whole = codec.encode(audio[None])[0]
    torch.testing.assert_close(latent, whole, atol=1e-5, rtol=1e-4)
    decoded = decode_many(codec, [whole.half()], [audio.shape[-1]], settings)[0]
    torch.testing.assert_close(decoded, codec.decode(whole.half().float()[None],
                                                     length=audio.shape[-1])[0],
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="integer codes belong to a quantized codec"):
        decode_many(codec, [torch.zeros(16, 10, dtype=torch.long)])


def test_a_vae_codec_round_trips_through_a_model_folder(codec, tmp_path):
    codec.save_pretrained(tmp_path / "model")
    loaded = Codec.from_pretrained(tmp_path / "model")
    assert loaded.continuous and loaded.config == codec.config
    assert loaded.fingerprint() == codec.fingerprint()
    audio = notes(0.5, 16_000, channels=2)[None]
    torch.testing.assert_close(loaded.encode(audio), codec.encode(audio))
