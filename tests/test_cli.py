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
