"""What a token file is checked by: the codes fingerprint (encoder and quantizer, what
the codes mean) lets a new decoder read the codes of the codec it was trained behind, and
refuses every other codec's; the weights fingerprint (all of them) marks decoded audio."""

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmdtok import Codec
from mmdtok.cli import app
from mmdtok.models import ISTFTConfig
from mmdtok.persistence import bundled_codes_fingerprints
from mmdtok.testing import notes
from mmdtok.tokens import (
    CodecMismatchError,
    check_same_codec,
    load_tokens,
    save_tokens,
    token_file,
)


@pytest.fixture(scope="module")
def seanet():
    """The shipped SEANet codec ``small-music`` (the one whose files predate the codes
    fingerprint)."""
    from mmdtok.persistence import bundled_names

    name = "small-music-seanet" if "small-music-seanet" in bundled_names() else "small-music"
    return Codec.from_pretrained(f"mmdtok:{name}")


@pytest.fixture(scope="module")
def behind(seanet):
    """seanet's encoder and codebooks with a frame-rate decoder (random weights)."""
    torch.manual_seed(0)
    codec = Codec.from_config(replace(seanet.config, istft=ISTFTConfig(
        dim=32, intermediate=64, blocks=1))).for_inference()
    state = {k: v for k, v in seanet.state_dict().items() if not k.startswith("decoder.")}
    return codec.load_weights({**codec.state_dict(), **state})


def test_a_new_decoder_keeps_the_codes_fingerprint_and_changes_the_weights(seanet, behind):
    assert behind.codes_fingerprint() == seanet.codes_fingerprint()
    assert behind.fingerprint() != seanet.fingerprint()
    audio = notes(0.5, 24_000, seed=2)[None]
    assert torch.equal(behind.encode(audio), seanet.encode(audio))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_the_codes_fingerprint_follows_every_tensor_but_the_decoders(behind, data):
    state = behind.state_dict()
    name = data.draw(st.sampled_from(sorted(k for k, v in state.items()
                                            if v.is_floating_point())))
    changed = {**state, name: state[name] + 1e-3}
    other = Codec.from_config(behind.config).for_inference().load_weights(changed)
    assert other.fingerprint() != behind.fingerprint()
    assert (other.codes_fingerprint() == behind.codes_fingerprint()) == name.startswith(
        "decoder.")


def test_the_codes_fingerprint_follows_the_settings_the_encoder_runs_by(behind):
    def with_config(config):
        return Codec.from_config(config).for_inference().load_weights(behind.state_dict())

    renamed = with_config(replace(behind.config, name="renamed"))
    assert renamed.codes_fingerprint() == behind.codes_fingerprint()  # a name is no meaning
    # the same weights padded otherwise make other codes: another meaning
    padded = with_config(replace(behind.config, seanet=replace(behind.config.seanet,
                                                               pad_mode="constant")))
    assert padded.fingerprint() == behind.fingerprint()
    assert padded.codes_fingerprint() != behind.codes_fingerprint()


def _file(codec, tmp_path, name="a.mmdtok", legacy=False):
    audio = notes(0.6, codec.sample_rate, seed=5)[None]
    tokens = token_file(codec, codec.encode(audio)[0], audio.shape[-1], source="a.wav")
    if legacy:  # as written before token files recorded what their codes mean
        tokens = replace(tokens, codes_fingerprint="")
    path = tmp_path / name
    save_tokens(path, tokens)
    return path


def test_token_files_of_the_same_codes_decode_with_the_new_decoder(seanet, behind, tmp_path):
    tokens = load_tokens(_file(seanet, tmp_path))
    assert tokens.codes_fingerprint == seanet.codes_fingerprint()
    check_same_codec(tokens, "behind", behind.fingerprint(),
                     codes_fingerprint=behind.codes_fingerprint())
    # without the codes fingerprint of the decoding codec, only the same weights pass
    with pytest.raises(CodecMismatchError, match="another encoder or codebooks"):
        check_same_codec(tokens, "behind", behind.fingerprint())


def test_files_written_before_the_codes_fingerprint_decode_by_the_shipped_codec(
        seanet, behind, tmp_path):
    legacy = load_tokens(_file(seanet, tmp_path, legacy=True))
    assert legacy.codes_fingerprint == "" and legacy.codec_fingerprint == seanet.fingerprint()
    mine = {"codes_fingerprint": behind.codes_fingerprint(),
            "shipped": bundled_codes_fingerprints}
    check_same_codec(legacy, "behind", behind.fingerprint(), **mine)
    with pytest.raises(CodecMismatchError):  # without the shipped codecs, nothing says
        check_same_codec(legacy, "behind", behind.fingerprint(),
                         codes_fingerprint=behind.codes_fingerprint())
    # a legacy file of a codec that is not shipped proves nothing: refused
    unknown = replace(legacy, codec_fingerprint="0123456789abcdef")
    with pytest.raises(CodecMismatchError, match="0123456789abcdef"):
        check_same_codec(unknown, "behind", behind.fingerprint(), **mine)


def test_decode_accepts_the_same_codes_and_refuses_another_codec(seanet, behind, tmp_path):
    model = tmp_path / "behind"
    behind.save_pretrained(model)
    for legacy in (False, True):
        folder = tmp_path / f"tokens-{legacy}"
        folder.mkdir()
        _file(seanet, folder, legacy=legacy)
        out = tmp_path / f"audio-{legacy}"
        result = CliRunner().invoke(app, ["decode", str(folder), "-o", str(out),
                                          "--model", str(model)])
        assert result.exit_code == 0, result.output
        assert (out / "a.wav").is_file()
    # another encoder: the codes mean something else to it
    other = Codec.from_config(behind.config)  # fresh random weights everywhere
    other.save_pretrained(tmp_path / "other")
    result = CliRunner().invoke(app, ["decode", str(tmp_path / "tokens-False"), "-o",
                                      str(tmp_path / "refused"), "--model",
                                      str(tmp_path / "other")])
    assert result.exit_code != 0
    assert "another encoder or codebooks" in result.output
    assert not list((tmp_path / "refused").glob("*.wav"))
