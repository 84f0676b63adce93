"""examples.paper_experiment.run end to end at a toy size on the tiny corpus."""

from __future__ import annotations

import json
import math

import pytest

from examples.paper_experiment import run

QUICK = ["--codec-override", "steps=2", "batch_size=2", "independence_every=1",
         "calibration_batches=1", "checkpoint_every=2", "--lm-steps", "2", "--lm-frames", "8",
         "--window-seconds", "1", "--lm-dim", "16", "--lm-layers", "1", "--lm-heads", "2"]


@pytest.fixture
def manifest(tiny_corpus, tmp_path):
    """The tiny corpus with its last piece as the held-out test split."""
    folder, _ = tiny_corpus
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    for i, entry in enumerate(lines):
        entry["path"] = str(folder / entry["path"])
        entry["split"] = "test" if i == len(lines) - 1 else "train"
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    return path


def test_both_codecs_get_every_figure_and_a_rerun_recomputes_nothing(manifest, tmp_path,
                                                                      capsys):
    out = tmp_path / "experiment"
    assert run.main([str(manifest), "-o", str(out), *QUICK]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"baseline", "independence"}
    for name, r in results.items():
        settings = json.loads((out / f"codec-{name}" / "train_config.json").read_text())
        assert settings["independence"] == (name == "independence")
        assert settings["quantizer"] == {"codebook_size": 256}
        assert all(math.isfinite(r[key]) for key in (
            "si_sdr", "mel_distance", "normalized_total_correlation", "pairwise_dependence",
            "stream_independence_loss"))
        nll = {p: r["lm"][p]["test_nll_per_frame"] for p in ("delay", "flatten")}
        # Barely trained LMs: near uniform over 256 codes for each of the 4 codebooks.
        assert all(0 < v < 2 * 4 * math.log(256) for v in nll.values())
        assert r["nll_gap"] == pytest.approx(nll["delay"] - nll["flatten"])
        assert list((out / f"tokens-{name}" / "test").rglob("*.mmdtok"))
    table = capsys.readouterr().out
    assert "| baseline |" in table and "| independence |" in table
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert run.main([str(manifest), "-o", str(out), *QUICK]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == stamps
    assert capsys.readouterr().out.splitlines()[-2:] == table.splitlines()[-2:]
