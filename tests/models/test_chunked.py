"""Chunked encoding and decoding (whole files in pieces) equal one pass over the whole input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mmdtok.models import ChunkSettings, decode_many, encode_many
from mmdtok.models.runtime.chunked import CONTEXT_SHARE, split_pieces
from mmdtok.testing import assert_same_codes_up_to_ties, notes, trained_codebooks


@pytest.fixture(scope="module")
def codec():
    return trained_codebooks("small-music")


@given(first=st.integers(0, 50), size=st.integers(1, 200), piece=st.integers(1, 40),
       context=st.integers(0, 10), slack=st.integers(0, 30))
def test_pieces_cover_the_frames_once_with_their_context(first, size, piece, context, slack):
    last, end = first + size, first + size + slack
    begin = max(0, first - context)
    pieces = split_pieces(first, last, (begin, end), piece, context)
    kept = [f for p in pieces for f in range(p.start + p.keep_start, p.start + p.keep_end)]
    assert kept == list(range(first, last))
    for p in pieces:
        lo, hi = p.start + p.keep_start, p.start + p.keep_end
        assert begin <= p.start and p.end <= end
        assert lo - p.start >= context or p.start == begin
        assert p.end - hi >= context or p.end == end
        if p.start > begin and p.end < end:  # a piece is long beside its context
            assert p.end - p.start == max(piece, CONTEXT_SHARE * context) + 2 * context
        # the context computed again is at most 2 / CONTEXT_SHARE of a piece's frames
        assert hi - lo == max(piece, CONTEXT_SHARE * context) or hi == last


def test_a_60_second_file_in_small_chunks_gives_the_whole_file_codes(codec):
    audio = notes(60.0, codec.sample_rate, seed=1)
    settings = ChunkSettings(window=230, piece=37, max_batch=4)
    with torch.inference_mode():
        latent = codec.encoder(audio[None])[0]
    whole = codec.quantizer.encode(latent[None])[0]
    chunked = encode_many(codec, [audio], settings=settings)[0]
    assert chunked.shape == whole.shape == (4, 4500)
    assert_same_codes_up_to_ties(codec, latent, chunked, whole)


def test_chunked_decoding_equals_whole_decoding_so_there_are_no_seams(codec):
    codes = encode_many(codec, [notes(20.0, codec.sample_rate, seed=2)])[0]
    settings = ChunkSettings(window=110, piece=23, max_batch=3)
    whole = codec.decode(codes[None])[0]
    chunked = decode_many(codec, [codes], [19 * codec.sample_rate], settings=settings)[0]
    assert chunked.shape == (1, 19 * codec.sample_rate)
    torch.testing.assert_close(chunked, whole[..., : chunked.shape[-1]], atol=1e-5, rtol=0)
    # No seam: the sample-to-sample jumps at piece borders are like those elsewhere.
    jumps = chunked[0].diff().abs()
    borders = torch.arange(23, codes.shape[-1], 23) * codec.hop_length
    assert jumps[borders[borders < jumps.numel()] - 1].max() <= jumps.max()


def test_batched_encoding_of_different_lengths_equals_one_at_a_time(codec):
    sr = codec.sample_rate
    audios = [notes(s, sr, seed=i) for i, s in enumerate([0.01, 0.4, 3.3, 7.9, 2.0])]
    settings = ChunkSettings(window=200, piece=50, max_batch=8)
    batched = encode_many(codec, audios, settings=settings)
    for audio, codes in zip(audios, batched):
        with torch.inference_mode():
            latent = codec.encoder(audio[None])[0]
        alone = codec.quantizer.encode(latent[None])[0]
        assert codes.shape == alone.shape
        assert_same_codes_up_to_ties(codec, latent, codes, alone, max_tie_fraction=0.01)


def test_n_q_keeps_a_prefix_of_the_codebooks(codec):
    audio = notes(1.0, codec.sample_rate)
    full, two = encode_many(codec, [audio, audio], n_q=None)[0], encode_many(codec, [audio],
                                                                              n_q=2)[0]
    assert torch.equal(two, full[:2])


def test_settings_are_checked(codec):
    with pytest.raises(ValueError, match="must be >= 1"):
        ChunkSettings(piece=0)
    with pytest.raises(ValueError, match="at least one item and one frame"):
        decode_many(codec, [torch.zeros(4, 0, dtype=torch.long)])
    with pytest.raises(ValueError, match="window must exceed"):
        encode_many(codec, [notes(0.1, 24_000)], settings=ChunkSettings(window=3))


def test_real_music_files_of_different_lengths_encode_and_decode_as_whole_passes(
        codec, tiny_corpus):
    from mmdtok.audio import load_audio

    folder, pieces = tiny_corpus
    audios = [load_audio(folder / p.path, 24_000, 1)[0][:, : 24_000 * (3 + i)]
              for i, p in enumerate(pieces)]
    settings = ChunkSettings(window=120, piece=30)
    codes = encode_many(codec, audios, settings=settings)
    decoded = decode_many(codec, codes, [a.shape[-1] for a in audios], settings=settings)
    for audio, code, out in zip(audios, codes, decoded):
        with torch.inference_mode():
            latent = codec.encoder(audio[None])[0]
        assert_same_codes_up_to_ties(codec, latent, code,
                                     codec.quantizer.encode(latent[None])[0])
        whole = codec.decode(code[None], length=audio.shape[-1])[0]
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=0)
