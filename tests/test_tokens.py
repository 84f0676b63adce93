import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mmdtok.tokens import (
    CodecMismatchError,
    LatentFile,
    TokenFile,
    check_same_codec,
    load_encoded,
    load_latents,
    load_tokens,
    read_metadata,
    save_latents,
    save_tokens,
)


def _tokens(codes, size=2048, **extra):
    return TokenFile(codes=codes, codec="musicgen-32khz", codec_fingerprint="abc123",
                     sample_rate=32_000, channels=1, frame_rate=50.0, codebook_size=size,
                     length=max(codes.shape[1] * 640 - 17, 0), codec_origin="owner/codec@1234",
                     source="song.wav", source_sample_rate=44_100, **extra)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 8), t=st.integers(0, 300), size=st.sampled_from([2, 1024, 65536]),
       seed=st.integers(0, 2**16))
def test_token_files_round_trip_codes_and_metadata(tmp_path_factory, k, t, size, seed):
    codes = torch.randint(0, size, (k, t), generator=torch.Generator().manual_seed(seed))
    path = tmp_path_factory.mktemp("tok") / "a.mmdtok"
    save_tokens(path, _tokens(codes, size))
    loaded = load_tokens(path)
    assert torch.equal(loaded.codes, codes) and loaded.codes.dtype == torch.int64
    assert loaded.metadata() == _tokens(codes, size).metadata()
    assert loaded.duration == pytest.approx(max(t * 640 - 17, 0) / 32_000)


def test_codes_out_of_range_or_not_integer_are_refused():
    with pytest.raises(ValueError, match=r"lie in \[0, codebook_size\) = \[0, 2048\)"):
        _tokens(torch.tensor([[2048]]))
    with pytest.raises(ValueError, match="integer tensor"):
        _tokens(torch.zeros(1, 3))


def test_other_safetensors_files_and_newer_versions_are_refused(tmp_path):
    save_file({"codes": torch.zeros(1, 2, dtype=torch.int16)}, tmp_path / "x.mmdtok",
              metadata={"format": "other"})
    with pytest.raises(ValueError, match="not an mmdtok token file"):
        load_tokens(tmp_path / "x.mmdtok")
    meta = _tokens(torch.zeros(1, 2, dtype=torch.long)).metadata() | {"format_version": "9"}
    save_file({"codes": torch.zeros(1, 2, dtype=torch.int16)}, tmp_path / "y.mmdtok",
              metadata=meta)
    with pytest.raises(ValueError, match="upgrade mmdtok"):
        load_tokens(tmp_path / "y.mmdtok")
    (tmp_path / "z.mmdtok").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="not a safetensors token file"):
        load_tokens(tmp_path / "z.mmdtok")


def test_decoding_with_other_weights_is_refused_naming_the_encoding_codec():
    tokens = _tokens(torch.zeros(4, 3, dtype=torch.long))
    check_same_codec(tokens, "musicgen-32khz", "abc123")
    with pytest.raises(CodecMismatchError, match=r"encoded by codec musicgen-32khz "
                                                 r"\(owner/codec@1234\)") as refused:
        check_same_codec(tokens, "other", "ffff")
    assert refused.value.origin == "owner/codec@1234"  # what the CLI suggests as --model
    assert "--" not in str(refused.value)  # the library speaks of no command-line flag


def _latents(values, dtype="float16"):
    return LatentFile(latents=values, dtype=dtype, codec="small-vae", codec_fingerprint="beef",
                      sample_rate=44_100, channels=2, frame_rate=44_100 / 2048,
                      length=max(values.shape[1] * 2048 - 5, 0), codec_origin="mmdtok:small-vae",
                      source="song.flac", source_sample_rate=48_000)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 70), t=st.integers(0, 200), dtype=st.sampled_from(["float16", "float32"]),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_latent_files_round_trip_in_their_dtype(tmp_path_factory, d, t, dtype, scale, seed):
    values = scale * torch.randn(d, t, generator=torch.Generator().manual_seed(seed))
    path = tmp_path_factory.mktemp("lat") / "a.mmdlat"
    save_latents(path, _latents(values, dtype))
    loaded = load_latents(path)
    stored = values.half().float() if dtype == "float16" else values
    assert torch.equal(loaded.latents, stored) and loaded.latents.dtype == torch.float32
    assert loaded.metadata() == _latents(values, dtype).metadata()
    assert read_metadata(path)["latent_dim"] == str(d)
    assert torch.equal(load_encoded(path).latents, stored)


def test_latent_and_token_files_are_told_apart_and_checked(tmp_path):
    save_latents(tmp_path / "a.mmdlat", _latents(torch.randn(4, 3)))
    save_tokens(tmp_path / "b.mmdtok", _tokens(torch.zeros(2, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="not an mmdtok token file .*'mmdtok-latents'"):
        load_tokens(tmp_path / "a.mmdlat")
    with pytest.raises(ValueError, match="not an mmdtok latent file"):
        load_latents(tmp_path / "b.mmdtok")
    assert isinstance(load_encoded(tmp_path / "a.mmdlat"), LatentFile)
    assert isinstance(load_encoded(tmp_path / "b.mmdtok"), TokenFile)
    with pytest.raises(ValueError, match="float16 range: store them as float32"):
        _latents(torch.full((2, 2), 1e5))
    assert _latents(torch.full((2, 2), 1e5), "float32").latent_dim == 2
    with pytest.raises(ValueError, match="NaN"):
        _latents(torch.full((2, 2), float("nan")), "float32")
    with pytest.raises(ValueError, match="floating-point"):
        _latents(torch.zeros(2, 2, dtype=torch.long))
    meta = _latents(torch.zeros(1, 2)).metadata() | {"format_version": "2"}
    save_file({"latents": torch.zeros(1, 2)}, tmp_path / "c.mmdlat", metadata=meta)
    with pytest.raises(ValueError, match="latent format version 2.*upgrade mmdtok"):
        load_latents(tmp_path / "c.mmdlat")
    check_same_codec(_latents(torch.zeros(1, 2)), "small-vae", "beef")
    with pytest.raises(CodecMismatchError, match="encoded by codec small-vae"):
        check_same_codec(_latents(torch.zeros(1, 2)), "small-vae", "0000")
