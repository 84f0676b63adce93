"""Atomic file writes: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


# Read once, at import: setting it later could race with threads creating files.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so that writers that pick a
    format from the suffix still work); on success it replaces ``path`` in one rename,
    on any failure (Ctrl-C included) it is removed and ``path`` is left untouched. The
    file gets the permissions of a plainly created one (0666 less the umask), not the
    private 0600 of a temporary file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}",
                                    dir=target.parent)
    os.close(handle)
    temp_path = Path(temp)
    try:
        yield temp_path
        with open(temp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp_path, 0o666 & ~_UMASK)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
