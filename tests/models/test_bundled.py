"""The codec shipped inside the package: it loads offline, its model card's figures are
reproducible, and it is a trained codec (better than untrained, codebooks in use)."""

import json
from pathlib import Path

import pytest
import torch

from mmdtok.models import Codec, build_codec
from mmdtok.models.pretrained import BUNDLED_DIR, bundled_model_card, bundled_names
from mmdtok.train.validation import evaluate_codec, load_clips

EXCERPTS = sorted((Path(__file__).parents[2] / "examples" / "audio").glob("*.flac"))
QUALITY = json.loads((BUNDLED_DIR / "small-music" / "quality.json").read_text())


@pytest.fixture(scope="module")
def codec():
    return Codec.bundled()


def test_the_default_codec_ships_and_loads_without_a_download(codec):
    assert bundled_names() == ["small-music"]
    assert codec.origin == "mmdtok:small-music"
    assert not codec.training
    assert codec.fingerprint() == QUALITY["fingerprint"]
    assert (codec.sample_rate, codec.channels, codec.num_codebooks) == (24_000, 1, 4)
    size = (BUNDLED_DIR / "small-music" / "model.safetensors").stat().st_size
    assert size < 8 * 2**20, "a few MB"
    card = bundled_model_card()
    assert f"`{QUALITY['fingerprint']}`" in card and "## Quality on held-out music" in card


def test_the_model_card_figures_on_the_example_music_are_reproduced(codec):
    for path, clip in zip(EXCERPTS, load_clips(EXCERPTS, codec.sample_rate, 1)):
        quality, _ = evaluate_codec(codec, [clip])
        card = QUALITY["excerpts"][path.name]
        assert quality.si_sdr == pytest.approx(card["si_sdr"], abs=0.05)
        assert quality.mel_distance == pytest.approx(card["mel_distance"], rel=1e-3)


def test_it_is_trained_better_than_untrained_weights_and_uses_its_codebooks(codec):
    clips = load_clips(EXCERPTS, codec.sample_rate, 1)
    trained, _ = evaluate_codec(codec, clips)
    torch.manual_seed(0)
    untrained = build_codec("small-music").eval()
    with torch.inference_mode():  # codebooks from the untrained latents, as at step 0
        untrained.train()
        untrained(torch.stack([c[:, :24_000] for c in clips]))
        untrained.eval()
    baseline, _ = evaluate_codec(untrained, clips)
    assert trained.mel_distance < 0.7 * baseline.mel_distance
    assert min(trained.perplexities) > 16, trained.perplexities


def test_unknown_bundled_names_are_refused():
    with pytest.raises(ValueError, match="bundled: \\['small-music'\\]"):
        Codec.bundled("large-music")


def test_one_naming_rule_shipped_codecs_folders_and_the_default(tmp_path):
    from mmdtok.models import build_codec
    from mmdtok.models.pretrained import load_codec

    assert load_codec().origin == load_codec("").origin == "mmdtok:small-music"
    with pytest.raises(ValueError, match="--revision applies to Hub repositories"):
        load_codec("mmdtok:small-music", revision="main")
    with pytest.raises(ValueError, match="bundled"):
        load_codec("mmdtok:large-music")
    build_codec("small-music").save_pretrained(tmp_path / "model")
    from_folder = load_codec(tmp_path / "model")
    assert from_folder.origin != "mmdtok:small-music"
    assert from_folder.fingerprint() == Codec.from_pretrained(tmp_path / "model").fingerprint()
