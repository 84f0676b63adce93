"""Finding input files: files named directly, and folders searched recursively. The one
finder behind ``mmdtok encode``/``decode``/``inspect`` and the trainer's data."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmdtok.atomic import is_temporary


@dataclass(frozen=True)
class FoundFile:
    """A file, and its path relative to the folder it was found in (its name when it
    was named directly): where it goes when a folder's tree is mirrored elsewhere."""

    path: Path
    relative: Path


def find_files(paths: Sequence[str | os.PathLike[str]], accept: Callable[[Path], bool]
               ) -> list[FoundFile]:
    """The files among ``paths`` and, for each folder, the files under it (recursively,
    sorted) that ``accept`` takes; in the order given. The temporary files of
    interrupted atomic writes (:func:`mmdtok.atomic.is_temporary`) are never taken from
    a folder. A file named directly is kept whatever its name. ValueError naming a path
    that does not exist."""
    found: list[FoundFile] = []
    for given in map(Path, paths):
        if given.is_dir():
            inside = sorted(p for p in given.rglob("*")
                            if p.is_file() and not is_temporary(p) and accept(p))
            found += [FoundFile(p, p.relative_to(given)) for p in inside]
        elif given.is_file():
            found.append(FoundFile(given, Path(given.name)))
        else:
            raise ValueError(f"no such file or folder: {given}")
    return found
