"""Examples to copy, importable from the repository root (``python -m examples.NAME``)."""
