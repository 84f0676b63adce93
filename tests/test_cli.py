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
    from mmdtok.persistence import RunFolder

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
