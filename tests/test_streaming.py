"""Streaming: pieces of any size in, the whole pass's codes and audio out."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.models import CodecConfig, SEANetConfig
from mmdtok.persistence import Codec
from mmdtok.streaming import StreamingDecoder, StreamingEncoder
from mmdtok.testing import assert_same_codes_up_to_ties, notes, trained_codebooks

SR = 16_000


def _causal(pad_mode="reflect", **seanet) -> CodecConfig:
    """EnCodec 24 kHz's layout (causal, conv shortcuts, reflected padding) made tiny."""
    args = {"dimension": 16, "n_filters": 4, "ratios": (4, 2, 2), "lstm_layers": 1,
            "causal": True, "conv_shortcut": True, "pad_mode": pad_mode} | seanet
    return CodecConfig(name="tiny-causal", sample_rate=SR, seanet=SEANetConfig(**args),
                       quantizer={"kind": "rvq", "num_codebooks": 3, "codebook_size": 64})


@pytest.fixture(scope="module")
def codec():
    return trained_codebooks(_causal())


@pytest.fixture(scope="module")
def codec64(codec):
    """The same codec in float64: the two computations then agree far below any gap
    between codebook distances, so the codes must be identical (in float32 a code can
    flip at a tie, which ``assert_same_codes_up_to_ties`` checks)."""
    return copy.deepcopy(codec).double()


def _pieces(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    """[start, end) of consecutive pieces of the given sizes (0 allowed), cycled until
    ``total`` samples are covered."""
    out, pos, i = [], 0, 0
    while pos < total:
        size = sizes[i % len(sizes)]
        out.append((pos, min(total, pos + size)))
        pos, i = pos + size, i + 1
    return out


def _streamed(stream, values, sizes):
    """``values`` [B, K, n] pushed in pieces of ``sizes`` (cycled), then the flush; after
    each push, what came out so far is what ``emitted`` promises for the input so far."""
    parts = []
    for start, end in _pieces(values.shape[-1], sizes):
        parts.append(stream.push(values[..., start:end]))
        assert sum(p.shape[-1] for p in parts) == stream.emitted(end)
    parts.append(stream.flush())
    return torch.cat(parts, -1)


def _sizes(largest: int):
    """Up to 8 piece sizes (cycled), zeros allowed but not only zeros."""
    return st.lists(st.integers(0, largest), min_size=1, max_size=8).filter(any)


SEEDS = st.integers(0, 3)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 3000), sizes=_sizes(400), seed=SEEDS)
def test_streamed_codes_equal_the_whole_pass_for_any_piece_sizes(codec64, length, sizes,
                                                                  seed):
    audio = notes(length / SR, SR, seed=seed)[None, :, :length].double()
    streamed = _streamed(StreamingEncoder(codec64), audio, sizes)
    assert torch.equal(streamed, codec64.encode(audio))


@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 150), sizes=_sizes(20), seed=SEEDS)
def test_streamed_audio_equals_the_whole_decoding_for_any_piece_sizes(codec, frames, sizes,
                                                                      seed):
    codes = torch.randint(0, 64, (1, 3, frames), generator=torch.Generator().manual_seed(seed))
    whole = codec.decode(codes)
    streamed = _streamed(StreamingDecoder(codec), codes, sizes)
    assert streamed.shape == whole.shape == (1, 1, frames * codec.hop_length)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)


def test_after_the_startup_each_frame_comes_out_as_soon_as_its_hop_is_in(codec):
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    hop = codec.hop_length
    assert encoder.startup >= hop and decoder.startup >= 1
    assert encoder.emitted(encoder.startup - 1) == 0 < encoder.emitted(encoder.startup)
    for n in range(encoder.startup, encoder.startup + 5 * hop):
        assert encoder.emitted(n) == n // hop  # no look-ahead: one frame of latency
    for t in range(decoder.startup, decoder.startup + 5):
        assert decoder.emitted(t) == t * hop
    # and the promise holds on the real layers, one sample at a time
    audio = notes(0.1, SR)[None]
    out = [encoder.push(audio[..., i : i + 1]).shape[-1] for i in range(encoder.startup + hop)]
    # the frames held back at the start all come out with the sample that ends the wait
    assert sum(out[: encoder.startup - 1]) == 0
    assert out[encoder.startup - 1] == encoder.startup // hop
    assert sum(out) == (encoder.startup + hop) // hop


def test_a_codec_converted_after_streaming_streams_with_its_converted_weights(codec):
    # the weights a stream lays out are kept per layer: .double() gives the parameters new
    # storage under the same objects, which must not reuse the float32 layout
    converted = copy.deepcopy(codec)
    audio = notes(0.1, SR, seed=5)[None]
    codes = converted.encode(audio)
    _streamed(StreamingEncoder(converted), audio, [160])
    _streamed(StreamingDecoder(converted), codes, [2])
    converted.double()
    assert torch.equal(_streamed(StreamingEncoder(converted), audio.double(), [160]),
                       converted.encode(audio.double()))
    decoded = _streamed(StreamingDecoder(converted), codes, [2])
    assert decoded.dtype == torch.float64
    torch.testing.assert_close(decoded, converted.decode(codes), atol=1e-9, rtol=0)


def test_zero_padding_needs_no_startup_beyond_one_frame():
    codec = trained_codebooks(_causal(pad_mode="constant"))
    assert StreamingEncoder(codec).startup == codec.hop_length
    assert StreamingDecoder(codec).startup == 1


# slow tier: the published 32-stage layout itself, with codebooks fitted to its latents (a minute); the tiny causal codec checks the same law in the fast tier
@pytest.mark.slow
def test_the_encodec_24khz_layout_streams_20_ms_pieces_exactly():
    codec = trained_codebooks("encodec-24khz")
    audio = notes(1.0, codec.sample_rate, seed=3)[None]
    whole = codec.encode(audio)
    torch.testing.assert_close(_streamed(StreamingDecoder(codec), whole, [1, 2]),
                               codec.decode(whole), atol=1e-5, rtol=0)
    # Codes can differ at ties of its 32 stages (k-means on few rows leaves near-duplicate
    # entries): in float32 at many frames, in float64 at a few on some CPUs; each such
    # difference must be a tie.
    codec64, audio64 = codec.double(), audio.double()
    streamed = _streamed(StreamingEncoder(codec64), audio64, [480])  # 20 ms at 24 kHz: 1.5 frames
    with torch.no_grad():
        latent = codec64.encoder(audio64)[0]
    assert_same_codes_up_to_ties(codec64, latent, streamed[0], codec64.encode(audio64)[0],
                                 max_tie_fraction=0.05)
    # a prefix of the codebooks streams as it encodes offline
    assert torch.equal(_streamed(StreamingEncoder(codec64, n_q=8), audio64, [480]), streamed[:, :8])


def test_a_batch_and_stereo_stream_like_one_at_a_time():
    codec = trained_codebooks(_causal(channels=2))
    audio = torch.stack([notes(0.2, SR, seed=s, channels=2) for s in range(3)])
    streamed = _streamed(StreamingEncoder(codec), audio, [97, 13])
    for b in range(3):
        with torch.inference_mode():
            latent = codec.encoder(audio[b : b + 1])
            alone = codec.quantizer.encode(latent)
        assert_same_codes_up_to_ties(codec, latent[0], streamed[b], alone[0], 0.01)


def test_a_causal_continuous_codec_streams_its_latents():
    config = CodecConfig(name="tiny-vae-causal", sample_rate=SR, seanet=SEANetConfig(
        channels=2, dimension=8, n_filters=4, ratios=(4, 2), lstm_layers=1,
        activation="snake", causal=True), quantizer={"kind": "vae", "groups": 2})
    torch.manual_seed(0)
    vae = Codec.from_config(config).eval()
    audio = notes(0.1, SR, channels=2)[None]
    latent = _streamed(StreamingEncoder(vae), audio, [33, 0, 7])
    whole = vae.encode(audio)
    torch.testing.assert_close(latent, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_streamed(StreamingDecoder(vae), whole, [3]), vae.decode(whole),
                               atol=1e-5, rtol=0)


def test_a_stream_keeps_the_weights_it_was_built_with(codec64):
    codec = copy.deepcopy(codec64)  # the fixture is shared; float64: no ties
    audio = notes(0.5, codec.sample_rate)[None].double()
    before = codec.encode(audio)
    encoder = StreamingEncoder(codec)
    with torch.no_grad():
        for parameter in codec.parameters():
            parameter.mul_(0.5)  # the codec trains on
    assert not torch.equal(codec.encode(audio), before)
    assert torch.equal(_streamed(encoder, audio, [100]), before)


def test_non_causal_codecs_are_refused_with_the_reason():
    codec = Codec.from_preset("small-music")
    for cls in (StreamingEncoder, StreamingDecoder):
        with pytest.raises(ValueError, match="not causal: its centred convolutions look"):
            cls(codec)


def test_misuse_is_refused_clearly(codec):
    encoder = StreamingEncoder(codec)
    with pytest.raises(ValueError, match="nothing was pushed"):
        encoder.flush()
    with pytest.raises(ValueError, match=r"float tensor \[B, 1, n\]"):
        encoder.push(torch.zeros(1, 2, 10))
    encoder.push(torch.zeros(2, 1, 10))
    with pytest.raises(ValueError, match="the batch changed from 2 to 1"):
        encoder.push(torch.zeros(1, 1, 10))
    with pytest.raises(ValueError, match="NaN or infinite"):
        encoder.push(torch.full((2, 1, 3), float("nan")))
    encoder.flush()
    with pytest.raises(RuntimeError, match="has been flushed"):
        encoder.push(torch.zeros(2, 1, 10))
    decoder = StreamingDecoder(codec)
    decoder.push(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="keep the codebooks fixed"):
        decoder.push(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="codebook|code"):
        decoder.push(torch.full((1, 2, 3), 64, dtype=torch.long))


def test_published_encodec_24khz_weights_stream_to_transformers_codes_and_audio(tmp_path):
    pytest.importorskip("transformers")
    from mmdtok.testing import ENCODEC_CONFIGS, encodec_folder

    reference = encodec_folder(ENCODEC_CONFIGS["encodec_24khz"], tmp_path)
    codec = Codec.from_pretrained(tmp_path)
    audio = notes(0.7, 24_000, seed=5)[None]
    bandwidth = max(reference.config.target_bandwidths)
    with torch.no_grad():
        expected = reference.encode(audio, bandwidth=bandwidth)
        expected_audio = reference.decode(expected.audio_codes, expected.audio_scales)[0]
    codes = _streamed(StreamingEncoder(codec), audio, [480, 0, 333])
    # up to float32 ties between the 32 stages' entries, like the offline import
    with torch.inference_mode():
        latent = codec.encoder(audio)
    assert_same_codes_up_to_ties(codec, latent[0], codes[0], expected.audio_codes[0, 0])
    streamed_audio = _streamed(StreamingDecoder(codec), expected.audio_codes[0], [2, 1])
    torch.testing.assert_close(streamed_audio, expected_audio[..., : streamed_audio.shape[-1]],
                               atol=1e-4, rtol=0)


def test_building_a_stream_leaves_a_codec_with_weight_norm_as_it_was():
    torch.manual_seed(0)
    codec = Codec.from_preset("encodec-24khz")  # weight norm, training mode
    audio = notes(0.2, codec.sample_rate)[None]
    with torch.no_grad():
        before = codec.eval().decoder(codec.encoder(audio))
    StreamingEncoder(codec), StreamingDecoder(codec)
    with torch.no_grad():
        assert torch.equal(codec.decoder(codec.encoder(audio)), before)
    assert any(".parametrizations." in name for name in codec.state_dict())


def test_a_stream_built_in_inference_mode_runs(codec):
    # its frozen copy then holds inference tensors, which keep no update count
    audio = notes(0.1, SR, seed=6)[None]
    with torch.inference_mode():
        encoder = StreamingEncoder(codec)
        streamed = torch.cat([encoder.push(audio[..., :700]), encoder.push(audio[..., 700:]),
                              encoder.flush()], -1)
        codes = codec.encode(audio)
    assert torch.equal(streamed, codes)
