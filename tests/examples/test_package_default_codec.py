"""The shipped codec's model card is generated from its quality.json alone: every figure
and fact comes from the data, none is written into the template."""

import json
from pathlib import Path

from examples.train import package_default_codec as packaging
from mmdtok.persistence import BUNDLED_DIR

FOLDER = BUNDLED_DIR / "small-music"


def test_the_shipped_model_card_is_what_its_quality_json_renders():
    figures = json.loads((FOLDER / "quality.json").read_text())
    assert packaging.model_card(figures) == (FOLDER / "MODEL_CARD.md").read_text()


def test_the_card_follows_the_architecture_corpus_and_figures_it_is_given():
    figures = json.loads((FOLDER / "quality.json").read_text())
    figures["architecture"] |= {"n_filters": 99, "ratios": [4, 4], "codebook_size": 2048,
                                "sample_rate": 16_000, "frame_rate": 1000.0}
    figures["corpora"][0] |= {"hours": 12.34, "longest_seconds": 61.0, "pieces": 7,
                              "splits": {"train": 5, "test": 2}}
    figures["training"]["steps"] = 12_345
    figures["training"]["settings"]["weights"] = {"l1": 0.7, "mel": 2.0}
    figures["half_si_sdr_gap"] = 0.25
    table = figures.pop("evaluation")
    card = " ".join(packaging.model_card(figures).split())  # words, whatever the line breaks
    for fact in ("99 filters", "strides 4-4", "2,048 entries", "of 2,048", "16 kHz",
                 "1000 frames/s", "7 files, 12.3 h in all splits", "the longest 61 s",
                 "5 train, 0 valid, 2 test", "12,345 steps", "within 0.25 dB",
                 "L1 on the waveform (0.7)"):
        assert fact in card, fact
    for stale in ("16 filters", "1,024", "24 kHz", "75 frames/s", "2,500 steps",
                  "STFT loss", "Next to Opus"):
        assert stale not in card, stale
    with_table = packaging.model_card(figures | {"evaluation": table})
    for row in table["rows"]:
        assert f"| {row['system']} | {row['kbps']:.2f} | " in with_table


def test_the_evaluation_table_can_come_from_reports_already_written(tmp_path):
    """Reports of `mmdtok evaluate --json` (real ones, kept in examples/train/measured)
    give the card's table in the order given, and reports over other files are refused."""
    import pytest

    measured = FOLDER.parents[3] / "examples" / "train" / "measured"
    reports = [measured / "valid_gan_decoder_250.json", measured / "valid_gan_decoder_500.json"]
    table = packaging.evaluation_from_reports(reports, Path("data/real/manifest.jsonl"), 10.0)
    expected = [r["system"] for p in reports for r in json.loads(p.read_text())["rows"]]
    assert [r["system"] for r in table["rows"]] == expected and table["files"] == 7
    card = packaging.model_card(json.loads((FOLDER / "quality.json").read_text())
                                | {"evaluation": table})
    assert f"| {expected[1]} | 3.00 | " in card
    fewer = json.loads(reports[0].read_text())
    fewer["rows"][0]["files"] = fewer["rows"][0]["files"][:3]
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    with pytest.raises(SystemExit, match="different numbers of files"):
        packaging.evaluation_from_reports([reports[1], tmp_path / "fewer.json"],
                                          Path("m.jsonl"), 10.0)


def test_the_frame_rate_decoder_example_is_what_its_card_says():
    """examples/train/small-music-istft: the default codec's codes (the same codes
    fingerprint), its card rendered from its quality.json, its excerpt figures measured
    again."""
    import pytest

    from mmdtok import Codec
    from mmdtok.train.validation import evaluate_codec, load_clips

    folder = FOLDER.parents[3] / "examples" / "train" / "small-music-istft"
    figures = json.loads((folder / "quality.json").read_text())
    assert packaging.model_card(figures) == (folder / "MODEL_CARD.md").read_text()
    codec = Codec.from_pretrained(folder)
    assert codec.fingerprint() == figures["fingerprint"]
    assert codec.codes_fingerprint() == Codec.bundled().codes_fingerprint()
    for path, clip in zip(packaging.EXCERPTS, load_clips(packaging.EXCERPTS,
                                                          codec.sample_rate, 1)):
        quality, _ = evaluate_codec(codec, [clip])
        stated = figures["excerpts"][path.name]
        assert quality.si_sdr == pytest.approx(stated["si_sdr"], abs=0.05)
        assert quality.mel_distance == pytest.approx(stated["mel_distance"], rel=1e-3)
