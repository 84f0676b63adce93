"""The suite fails a skipped test unless a GPU is what it lacks."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _run(tmp_path, body):
    (tmp_path / "test_inner.py").write_text("import pytest\n\n\ndef test_it():\n" + body)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.strict_skips",
                           "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_skip_for_a_missing_dependency_fails_the_suite(tmp_path):
    result = _run(tmp_path, "    pytest.importorskip('no_such_module_here')\n")
    assert result.returncode == 1, result.stdout
    assert "skipped for a reason other than a missing GPU" in result.stdout


def test_a_skip_for_a_missing_gpu_is_a_skip(tmp_path):
    result = _run(tmp_path, "    pytest.skip('needs a CUDA GPU')\n")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
