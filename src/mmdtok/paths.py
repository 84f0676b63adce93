"""Finding input files: files named directly, folders searched recursively, and
manifests. The one finder behind ``mmdtok encode``/``decode``/``inspect``/``evaluate``
and the trainer's data."""

from __future__ import annotations

import json
import os
import stat
import warnings
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


def find_files(paths: Sequence[str | os.PathLike[str]], accept: Callable[[Path], bool],
               kind: str = "file to take") -> list[FoundFile]:
    """The files among ``paths`` and, for each folder, the files under it (recursively,
    sorted) that ``accept`` takes; in the order given. The temporary files of
    interrupted atomic writes (:func:`mmdtok.atomic.is_temporary`) are never taken from
    a folder. A file named directly is kept whatever its name. ValueError naming a path
    that does not exist or is not a regular file or folder, or a folder that holds no
    file to take (every input is used or refused; ``kind`` names what is taken, for the
    message). What a folder holds and is not taken is reported with a warning: unreadable
    subfolders, symbolic links to folders (not followed: name them directly), FIFOs and
    other special files."""
    found: list[FoundFile] = []
    for given in map(Path, paths):
        if given.is_dir():
            inside = sorted(_walk(given, accept))
            if not inside:
                raise ValueError(f"{given} holds no {kind}")
            found += [FoundFile(p, p.relative_to(given)) for p in inside]
        elif given.is_file():
            found.append(FoundFile(given, Path(given.name)))
        elif given.exists():
            raise ValueError(f"{given} is not a regular file or folder ({_kind(given)})")
        else:
            raise ValueError(f"no such file or folder: {given}")
    return found


MANIFEST_SUFFIXES = (".jsonl", ".json")


def is_manifest(path: Path) -> bool:
    """A JSON-lines manifest of audio files (as the recipes of ``examples/datasets``
    write), by its name."""
    return path.suffix in MANIFEST_SUFFIXES


def read_manifest(path: str | os.PathLike[str]) -> list[dict]:
    """The entries of a manifest, one JSON object per line with at least ``path``
    (relative paths are taken from the manifest's folder; the entry's ``path`` is made a
    :class:`~pathlib.Path`); blank lines are skipped. ValueError naming the line of a
    malformed entry."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the manifest {path}: {error}") from error
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio = Path(entry["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a manifest line with a 'path' "
                             f"({error})") from error
        entries.append({**entry, "path": audio if audio.is_absolute() else path.parent / audio})
    return entries


def _walk(folder: Path, accept: Callable[[Path], bool]) -> list[Path]:
    """The accepted regular files under ``folder``, with a warning for each thing
    skipped that a user may have meant to include."""
    taken, pending = [], [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as scan:
                entries = list(scan)
        except OSError as error:
            warnings.warn(f"skipped the folder {current}: {error.strerror or error}",
                          stacklevel=3)
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif entry.is_dir():  # a symbolic link to a folder
                warnings.warn(f"skipped {path}: a symbolic link to a folder is not followed "
                              "(it could loop); name it directly to include it", stacklevel=3)
            elif entry.is_file():
                if not is_temporary(path) and accept(path):
                    taken.append(path)
            elif accept(path):
                warnings.warn(f"skipped {path}: not a regular file ({_kind(path)})",
                              stacklevel=3)
    return taken


def _kind(path: Path) -> str:
    mode = path.stat().st_mode if path.exists() else 0
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a broken link" if path.is_symlink() else "not a regular file"


def manifest_files(path: str | os.PathLike[str], split: str | None = None) -> list[FoundFile]:
    """The audio files of a manifest (only the entries of ``split`` when given), each
    with its path relative to the deepest folder that holds every entry of the manifest:
    mirrored under an output folder, two entries never collide (a file name may repeat
    across the packages of a corpus). ValueError for a malformed manifest."""
    every = read_manifest(path)
    entries = [e for e in every if split is None or e.get("split") == split]
    if not entries:
        splits = sorted({str(e.get("split")) for e in every if e.get("split") is not None})
        raise ValueError(f"the manifest {path} has no entries" + (
            f" of the split {split!r} (its splits: {', '.join(splits) or 'none'})"
            if split is not None and every else ""))
    paths = [Path(os.path.abspath(e["path"])) for e in entries]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return [FoundFile(p, p.relative_to(root)) for p in paths]


def find_inputs(paths: Sequence[str | os.PathLike[str]], accept: Callable[[Path], bool],
                split: str | None = None, kind: str = "file to take") -> list[FoundFile]:
    """The files of ``paths`` in order: a manifest (.jsonl) stands for its entries (of
    ``split`` when given, see :func:`manifest_files`), any other file or folder for what
    :func:`find_files` finds there. ValueError for a missing path, a malformed manifest,
    or a manifest or folder with nothing to take."""
    if split is not None and not any(Path(p).is_file() and is_manifest(Path(p))
                                     for p in paths):
        raise ValueError(f"a split ({split!r}) selects the entries of a manifest, and no "
                         "input is a manifest (.jsonl)")
    found: list[FoundFile] = []
    for given in map(Path, paths):
        if given.is_file() and is_manifest(given):
            found += manifest_files(given, split)
        else:
            found += find_files([given], accept, kind)
    return found
