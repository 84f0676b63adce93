"""The mmdtok console script."""

import subprocess
import sys

import torch
from typer.testing import CliRunner

import mmdtok
from mmdtok.cli import app


def test_version_prints_the_package_and_torch_versions():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert f"mmdtok {mmdtok.__version__}" in result.output
    assert f"torch {torch.__version__}" in result.output


def test_module_entry_point_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "mmdtok", "--help"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "version" in result.stdout


def test_unknown_command_fails_with_a_usage_error():
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code != 0


def test_train_codec_refuses_to_overwrite_a_run_or_resume_nothing_naming_the_flag(tmp_path):
    from mmdtok.train.folder import RunFolder

    (tmp_path / "audio").mkdir()
    started = RunFolder(tmp_path / "run")
    started.checkpoint.parent.mkdir(parents=True)
    started.checkpoint.write_bytes(b"")
    again = CliRunner().invoke(app, ["train-codec", str(tmp_path / "audio"), "-o",
                                     str(started.root)])
    assert again.exit_code == 2 and "already holds a run: pass --resume" in again.output
    nothing = CliRunner().invoke(app, ["train-codec", str(tmp_path / "audio"), "-o",
                                       str(tmp_path / "empty"), "--resume"])
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output
    assert not (tmp_path / "empty").exists()


def test_an_early_stop_says_so_and_success_is_printed_only_with_the_codec(tiny_corpus,
                                                                          tmp_path):
    manifest = str(tiny_corpus[0] / "manifest.jsonl")
    settings = ["steps=2", "batch_size=2", "segment_seconds=0.25", "discriminator_filters=4",
                "checkpoint_every=1", "calibration_batches=1", "valid_every=0"]
    out = tmp_path / "run"
    first = CliRunner().invoke(app, ["train-codec", manifest, "-o", str(out), *settings,
                                     "--max-steps", "1"])
    assert first.exit_code == 0, first.output
    assert "stopped at step 1 of 2" in first.output and "--resume" in first.output
    assert "trained to step" not in first.output
    changed = CliRunner().invoke(app, ["train-codec", manifest, "-o", str(out), *settings,
                                       "lr=0.01", "--resume"])
    assert changed.exit_code == 2 and "lr=0.0003 (now 0.01)" in changed.output
    done = CliRunner().invoke(app, ["train-codec", manifest, "-o", str(out), *settings,
                                    "--resume"])
    assert done.exit_code == 0, done.output
    assert "trained to step 2" in done.output and (out / "model.safetensors").exists()


def test_ctrl_c_during_training_says_how_to_resume(tiny_corpus, tmp_path):
    import os
    import signal
    import time
    from pathlib import Path

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmdtok", "train-codec", str(tiny_corpus[0] / "manifest.jsonl"),
         "-o", str(out), "steps=10000", "batch_size=2", "segment_seconds=0.25",
         "discriminator_filters=4", "checkpoint_every=1", "valid_every=0"],
        env={**os.environ, "OMP_NUM_THREADS": "1",
             "PYTHONPATH": str(Path(__file__).parents[1])},
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "last.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "add --resume to the same command" in err and "Traceback" not in err


def test_progress_off_a_terminal_is_plain_lines_with_rate_and_time_left(capsys):
    from mmdtok.cli import _progress

    with _progress(4, "training", log_every=3600) as advance:
        for step in range(4):
            advance(None, "step", f"mel {step}" if step < 3 else None)
    lines = capsys.readouterr().err.strip().splitlines()
    # an hour between lines: only the last step prints, with the last info kept
    assert len(lines) == 1 and lines[0].startswith("training: 4/4 (")
    assert lines[0].endswith("0.0m left)  mel 2")
    with _progress(3, "encoding", log_every=0) as advance:
        for _ in range(3):
            advance(None, "ok")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"encoding: {i}/3" for i in (1, 2, 3)]
    with _progress(3, "quiet", enabled=False, log_every=0) as advance:
        advance(None, "ok")
    assert capsys.readouterr().err == ""


def test_progress_of_a_resumed_run_counts_from_its_step_and_rates_this_sessions_steps(
        capsys, monkeypatch):
    from mmdtok import cli

    clock = iter([0.0] + [10.0 * i for i in range(1, 4)])
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))
    with cli._progress(4000, "training", log_every=0) as advance:
        for step in (2401, 2402, 2403):  # resumed at step 2,400, 10 s per step
            advance(None, "step", None, step)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"training: {s}/4000" for s in (2401, 2402, 2403)]
    # 1,597 steps left at 10 s each: 4h26m, not the 4,000 - 3 a count from 0 would give
    assert lines[-1] == "training: 2403/4000 (10 s each, 4h26m left)"
