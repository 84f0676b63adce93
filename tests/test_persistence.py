"""The codec shipped inside the package: it loads offline, its model card's figures are
reproducible, and it is a trained codec (better than untrained, codebooks in use)."""

import json
from pathlib import Path

import pytest
import torch

from mmdtok import Codec
from mmdtok.persistence import BUNDLED_DIR, bundled_model_card, bundled_names
from mmdtok.train.validation import evaluate_codec, load_clips

EXCERPTS = sorted((Path(__file__).parents[1] / "examples" / "audio").glob("*.flac"))
SHIPPED = ["small-music", "small-music-causal"]
QUALITY = {name: json.loads((BUNDLED_DIR / name / "quality.json").read_text())
           for name in SHIPPED}


@pytest.fixture(scope="module")
def codec():
    return Codec.bundled()


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    return request.param, Codec.bundled(request.param)


def test_the_shipped_codecs_load_without_a_download(shipped):
    name, codec = shipped
    assert bundled_names() == SHIPPED
    assert codec.origin == f"mmdtok:{name}" and not codec.training
    assert codec.fingerprint() == QUALITY[name]["fingerprint"]
    assert (codec.sample_rate, codec.channels, codec.num_codebooks) == (24_000, 1, 4)
    size = (BUNDLED_DIR / name / "model.safetensors").stat().st_size
    assert size < 8 * 2**20, "a few MB"
    card = bundled_model_card(name)
    assert f"`{QUALITY[name]['fingerprint']}`" in card and "## Quality on held-out music" in card


def test_the_package_stays_small():
    """The wheel is a zip of the package's files, deflated: the same compression of every
    file under mmdtok/ (the shipped codecs included) must stay under 20 MB, with 1 MB
    left for the wheel's own metadata."""
    import zlib

    package = BUNDLED_DIR.parent
    total = sum(len(zlib.compress(p.read_bytes(), 6)) for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts)
    assert total < 19e6, f"the wheel must stay under 20 MB ({total / 1e6:.1f} MB deflated)"


def test_the_model_card_figures_on_the_example_music_are_reproduced(shipped):
    name, codec = shipped
    for path, clip in zip(EXCERPTS, load_clips(EXCERPTS, codec.sample_rate, 1)):
        quality, _ = evaluate_codec(codec, [clip])
        card = QUALITY[name]["excerpts"][path.name]
        assert quality.si_sdr == pytest.approx(card["si_sdr"], abs=0.05)
        assert quality.mel_distance == pytest.approx(card["mel_distance"], rel=1e-3)


def test_they_are_trained_better_than_untrained_weights_and_use_their_codebooks(shipped):
    name, codec = shipped
    clips = load_clips(EXCERPTS, codec.sample_rate, 1)
    trained, _ = evaluate_codec(codec, clips)
    torch.manual_seed(0)
    untrained = Codec.from_preset(name).eval()
    with torch.inference_mode():  # codebooks from the untrained latents, as at step 0
        untrained.train()
        untrained(torch.stack([c[:, :24_000] for c in clips]))
        untrained.eval()
    baseline, _ = evaluate_codec(untrained, clips)
    assert trained.mel_distance < 0.7 * baseline.mel_distance
    assert min(trained.perplexities) > 16, trained.perplexities


def test_the_causal_codec_streams_real_music_exactly_from_one_frame():
    from mmdtok.streaming import StreamingDecoder, StreamingEncoder

    codec = Codec.bundled("small-music-causal")
    assert codec.encoder.causal and codec.decoder.causal
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    assert encoder.startup == codec.hop_length and decoder.startup == 1  # one frame
    clip = load_clips(EXCERPTS[:1], codec.sample_rate, 1)[0][:, : 3 * codec.sample_rate]
    audio, piece = clip[None], codec.sample_rate // 50  # 20 ms pieces
    codes = [encoder.push(audio[..., i : i + piece]) for i in range(0, audio.shape[-1], piece)]
    codes.append(encoder.flush())
    out = torch.cat([decoder.push(c) for c in codes if c.shape[-1]] + [decoder.flush()], -1)
    streamed, whole = torch.cat(codes, -1), codec.encode(audio)
    assert (streamed == whole).float().mean() > 0.999  # the rest: float32 ties
    torch.testing.assert_close(out, codec.decode(streamed), atol=1e-4, rtol=0)
    stated = QUALITY["small-music-causal"]["streaming"]
    assert (stated["encoder_startup_samples"], stated["decoder_startup_frames"]) == (
        encoder.startup, decoder.startup)


def test_unknown_bundled_names_are_refused():
    with pytest.raises(ValueError, match="bundled: \\['small-music', 'small-music-causal'\\]"):
        Codec.bundled("large-music")


def test_one_naming_rule_shipped_codecs_folders_and_the_default(tmp_path):
    from mmdtok import Codec
    from mmdtok.persistence import load_codec

    assert load_codec().origin == load_codec("").origin == "mmdtok:small-music"
    with pytest.raises(ValueError, match="a revision applies to Hub repositories"):
        load_codec("mmdtok:small-music", revision="main")
    with pytest.raises(ValueError, match="bundled"):
        load_codec("mmdtok:large-music")
    Codec.from_preset("small-music").save_pretrained(tmp_path / "model")
    from_folder = load_codec(tmp_path / "model")
    assert from_folder.origin != "mmdtok:small-music"
    assert from_folder.fingerprint() == Codec.from_pretrained(tmp_path / "model").fingerprint()


def test_a_format_1_folder_loads_with_the_same_weights_under_todays_names(codec, tmp_path):
    from safetensors.torch import load_file, save_file

    from mmdtok.testing import notes

    folder = BUNDLED_DIR / "small-music"
    data = json.loads((folder / "config.json").read_text())
    quantizer = dict(data["codec"]["quantizer"])
    old = {**{k: v for k, v in quantizer.items()
              if k not in ("codebook", "codebook_dropout", "latent_norm")},
           **quantizer["codebook"], "quantizer_dropout": quantizer["codebook_dropout"],
           "standardize": quantizer["latent_norm"]}
    data = {**data, "format_version": 1, "codec": {**data["codec"], "quantizer": old}}
    state = {k.replace("quantizer.latent_norm.", "quantizer.standardizer."): v
             for k, v in load_file(str(folder / "model.safetensors")).items()}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(data))
    save_file(state, str(tmp_path / "old" / "model.safetensors"))
    loaded = Codec.from_pretrained(tmp_path / "old")
    assert loaded.config == codec.config and loaded.fingerprint() == codec.fingerprint()
    audio = notes(1.0, codec.sample_rate, seed=3)[None]
    assert torch.equal(loaded.encode(audio), codec.encode(audio))


def test_origin_strings_parse_back_to_what_loads_the_codec_again(tmp_path):
    from mmdtok.persistence import parse_origin

    assert parse_origin("") == (None, None)
    assert parse_origin("mmdtok:small-music") == ("mmdtok:small-music", None)
    assert parse_origin(str(tmp_path)) == (str(tmp_path), None)  # an existing folder
    assert parse_origin("owner/codec@0123abc") == ("owner/codec", "0123abc")
    assert parse_origin("owner/codec") == ("owner/codec", None)


def test_token_files_record_the_codec_so_that_decoding_finds_and_checks_it(codec, tmp_path):
    from mmdtok.persistence import load_codec, parse_origin
    from mmdtok.testing import notes
    from mmdtok.tokens import check_same_codec, load_tokens, save_tokens, token_file

    audio = notes(0.5, codec.sample_rate, seed=1)[None]
    save_tokens(tmp_path / "a.mmdtok", token_file(codec, codec.encode(audio)[0],
                                                  audio.shape[-1], source="a.wav"))
    tokens = load_tokens(tmp_path / "a.mmdtok")
    again = load_codec(*parse_origin(tokens.codec_origin))
    check_same_codec(tokens, again.config.name, again.fingerprint())
    assert (tokens.length, tokens.source, tokens.codebook_size) == (audio.shape[-1], "a.wav",
                                                                    1024)
    decoded = again.decode(tokens.codes[None], length=tokens.length)
    assert decoded.shape == audio.shape
