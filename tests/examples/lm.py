"""Import the modules of examples/musicgen_lm (they import each other by plain name)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

FOLDER = Path(__file__).parents[2] / "examples" / "musicgen_lm"


def load(name: str):
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    return importlib.import_module(name)
