"""The tiny recipe of examples/datasets/render_corpus.py, rendered once per test session."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


def load_script():
    """The recipe script, imported as the module ``examples.datasets.render_corpus``
    (worker processes, spawned with the parent's sys.path, import it the same way)."""
    return importlib.import_module("examples.datasets.render_corpus")


def available_renderer() -> str | None:
    if shutil.which("timidity") and Path("/etc/timidity/fluidr3_gm.cfg").exists():
        return "timidity"
    if importlib.util.find_spec("tinysoundfont") and importlib.util.find_spec("pretty_midi"):
        return "tinysoundfont"
    return None


def require_renderer() -> str:
    if importlib.util.find_spec("music21") is None or importlib.util.find_spec(
            "pretty_midi") is None:
        pytest.skip("music21 and pretty_midi are needed to render the corpus (dev extra)")
    renderer = available_renderer()
    if renderer is None:
        pytest.skip("no renderer: apt-get install timidity fluid-soundfont-gm, or pip install "
                    "tinysoundfont --no-deps")
    return renderer
