"""The tiny recipe of examples/datasets/render_corpus.py, rendered once per test session."""

from __future__ import annotations

import importlib
import os


def load_script():
    """The recipe script, imported as the module ``examples.datasets.render_corpus``
    (worker processes, spawned with the parent's sys.path, import it the same way)."""
    return importlib.import_module("examples.datasets.render_corpus")


def available_renderer() -> str:
    """The renderer the tests use: the script's best available one (additive synthesis
    when no SoundFont renderer is installed, so the corpus tests never skip), or the one
    named by ``MMDTOK_TEST_RENDERER`` (to test a machine without SoundFont renderers)."""
    return os.environ.get("MMDTOK_TEST_RENDERER") or load_script().available_renderer()


def require_renderer() -> str:
    return available_renderer()
