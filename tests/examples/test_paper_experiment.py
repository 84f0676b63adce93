"""examples.paper_experiment.run end to end at a toy size on the tiny corpus."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from examples.paper_experiment import run

QUICK = ["--codec-override", "steps=2", "batch_size=2", "independence_every=1",
         "calibration_batches=1", "checkpoint_every=2", "warmup_steps=1",
         "--lm-steps", "2", "--lm-frames", "8", "--window-seconds", "1", "--lm-dim", "16",
         "--lm-layers", "1", "--lm-heads", "2", "--depth-dim", "16", "--lm-seeds", "0", "1",
         "--flatten"]


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


@pytest.mark.parametrize("start_from, jobs, arms", [
    ("scratch", "1", ["none", "delay", "parallel"]),
    ("mmdtok:small-music", "2", ["delay", "none"])])  # a subset, given out of order
# slow tier: the paper experiment end to end
@pytest.mark.slow
def test_arms_from_one_codec_get_every_figure_and_a_rerun_recomputes_nothing(
        manifest, tmp_path, capsys, start_from, jobs, arms):
    out = tmp_path / "experiment"
    options = [*QUICK, "--start-from", start_from, "--jobs", jobs, "--arms", *arms]
    assert run.main([str(manifest), "-o", str(out), *options]) == 0
    results = json.loads((out / "results.json").read_text())
    start = results.pop("start")
    assert list(results) == [name for name in run.ARMS if name in arms]
    for name in set(run.ARMS) - set(arms):  # an arm left out is neither trained nor shown
        assert not (out / f"codec-{name}").exists()
    if start_from == "scratch":
        shared = json.loads((out / "codec-shared" / "train_config.json").read_text())
        assert shared["independence"] is False and shared["init_from"] == ""
        origin = str(out / "codec-shared")
    else:
        assert not (out / "codec-shared").exists()
        origin = start_from
        # Each stage ran in a worker with its messages in its own log.
        assert "codec-none" in (out / "logs" / "codec-none.log").read_text()
    assert start["codec"] == origin and math.isfinite(start["si_sdr"])
    assert set(start["independence_loss"]) == set(results["none"]["independence_loss"])
    for name, r in results.items():
        settings = json.loads((out / f"codec-{name}" / "train_config.json").read_text())
        assert settings["init_from"] == origin
        assert settings["independence"] == (name != "none")
        assert settings["independence_pattern"] == ("" if name == "none" else name)
        assert settings["seed"] == 1  # the same batches in every arm
        assert all(math.isfinite(r[key]) for key in ("si_sdr", "mel_distance"))
        assert set(r["independence_loss"]) == {
            "median_delay", "median_parallel", "paper_bandwidths_delay",
            "paper_bandwidths_parallel"}
        assert all(math.isfinite(v) and v >= 0 for v in r["independence_loss"].values())
        for layout in ("delay", "parallel"):
            gap = r["gap"][layout]
            assert gap["seeds"] == 2 and len(gap["runs"]) == 2
            assert [g["training"]["seed"] for g in gap["runs"]] == [0, 1]
            for g in gap["runs"]:
                assert g["pattern"] == layout
                assert g["gap"] == pytest.approx(g["nll_factorized"] - g["nll_joint"])
                # Barely trained LMs: near uniform over 1,024 codes for each of 4 codebooks.
                assert 0 < g["nll_joint"] < 2 * 4 * math.log(1024)
            if name == "none":
                assert "change_vs_none" not in gap
            else:  # paired over the same held-out windows
                change = gap["change_vs_none"]
                expected = gap["gap"] - results["none"]["gap"][layout]["gap"]
                assert change["difference"] == pytest.approx(expected, abs=1e-5)
                assert change["ci95"][0] <= change["difference"] <= change["ci95"][1]
        assert 0 < r["flatten"]["test_nll_per_frame"] < 2 * 4 * math.log(1024)
        assert list((out / f"tokens-{name}" / "test").rglob("*.mmdtok"))
    table = capsys.readouterr().out
    assert all((f"| {name} |" in table) == (name in arms) for name in run.ARMS)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert run.main([str(manifest), "-o", str(out), *options]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == stamps
    assert capsys.readouterr().out.splitlines()[-3:] == table.splitlines()[-3:]
    for name in arms:  # the result files alone are enough to resume: no codec, no tokens
        shutil.rmtree(out / f"codec-{name}")
        shutil.rmtree(out / f"tokens-{name}")
    assert run.main([str(manifest), "-o", str(out), *options]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == table.splitlines()[-3:]
    assert not any((out / f"tokens-{name}").exists() for name in arms)


def _mark(folder, name, needs):
    """A job of the scheduler test: fails unless the jobs it needs wrote their marks."""
    if not all((folder / need).exists() for need in needs):
        raise AssertionError(f"{name} started before {needs}")
    if name == "broken":
        raise OSError("disk full")
    (folder / name).write_text("done")


@pytest.mark.parametrize("workers", [1, 2])
def test_jobs_start_after_what_they_need_and_a_failure_names_its_stage(tmp_path, workers):
    graph = {"a": (), "b": (), "c": ("a",), "d": ("c", "b"), "e": ("a",)}
    jobs = [run.Job(name, _mark, (tmp_path, name, needs), needs)
            for name, needs in graph.items()]
    run.run_jobs(jobs, workers, tmp_path / "logs")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(graph)
    jobs = [run.Job("broken", _mark, (tmp_path, "broken", ()), ()),
            run.Job("after", _mark, (tmp_path, "after", ("broken",)), ("broken",))]
    with pytest.raises((RuntimeError, OSError), match="broken|disk full"):
        run.run_jobs(jobs, workers, tmp_path / "logs")
    assert not (tmp_path / "after").exists()


def test_jobs_must_be_positive(manifest, tmp_path, capsys):
    assert run.main([str(manifest), "-o", str(tmp_path / "x"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_the_arm_without_the_loss_is_needed(manifest, tmp_path, capsys):
    assert run.main([str(manifest), "-o", str(tmp_path / "x"), "--arms", "delay"]) == 2
    assert "--arms needs 'none'" in capsys.readouterr().err
    assert not (tmp_path / "x" / "results").exists()
