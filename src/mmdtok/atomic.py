"""Atomic file writes: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.[0-9a-f]{8}\.part(?P<suffix>\.[^.]*)?", re.DOTALL)
# Per folder, the temporaries found there at this process's first write into it, by the
# name of the file each was writing: listed once per folder, not once per write.
_STALE: dict[str, dict[str, list[Path]]] = {}


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named as the temporary file of an atomic write
    (``.NAME.XXXXXXXX.part.SUFFIX``): an unfinished write, never data to read."""
    return bool(_TEMPORARY.fullmatch(Path(path).name))


def remove_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that earlier, interrupted writes of ``target`` left
    next to it; returns them. Only one writer writes a given target at a time (parallel
    shards write disjoint files), so a temporary of ``target`` that was there before this
    process first wrote into the folder is stale. The folder is listed once per process."""
    target = Path(target)
    folder = os.path.abspath(target.parent)
    if folder not in _STALE:
        _STALE[folder] = _temporaries_by_target(folder)
    removed = _STALE[folder].pop(target.name, [])
    for temp in removed:
        temp.unlink(missing_ok=True)
    return removed


def _temporaries_by_target(folder: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if not os.path.isdir(folder):
        return found
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match and entry.is_file():
                name = match["stem"] + (match["suffix"] or "")
                found.setdefault(name, []).append(Path(entry.path))
    return found


def _create_temp(target: Path) -> Path:
    """A new empty file next to ``target`` with the same suffix (writers that pick a
    format from the suffix still work). Created with mode 0666 so that the kernel applies
    the umask: the finished file gets the permissions of a plainly created one."""
    while True:
        temp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.part{target.suffix}")
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return temp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one
    rename, on any failure (Ctrl-C included) it is removed and ``path`` is left
    untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(target)  # left by a write of the same file that was killed
    temp = _create_temp(target)
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def check_writable(folder: str | os.PathLike[str]) -> None:
    """OSError unless a file can be created in ``folder``: one is created under a
    temporary's name (never read as data) and removed at once."""
    _create_temp(Path(folder) / ".mmdtok-write-test").unlink()
