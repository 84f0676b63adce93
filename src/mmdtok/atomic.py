"""Atomic file writes: a file appears complete under its name, or not at all; a failed
write is an :class:`OSError` with its cause (:func:`write_error` puts it in words)."""

from __future__ import annotations

import contextlib
import errno
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
    mode = temp.stat().st_mode  # what a plainly created file gets (the umask)
    try:
        yield temp
        if temp.stat().st_mode != mode:  # a writer that made its file anew (safetensors)
            temp.chmod(mode)
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    except OSError as error:
        temp.unlink(missing_ok=True)
        if error.filename in (None, os.fspath(temp)):  # name the file, not its temporary
            raise OSError(error.errno, error.strerror, os.fspath(target)) from error
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """ValueError unless a file can be written atomically under ``path``: it is not a
    folder or a special file (a device, a FIFO), and the nearest folder above it that
    exists takes new files (the missing ones are made at the write). Nothing is left on
    disk: meant to run before the work whose result goes there."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the name of a file to write")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file: mmdtok writes a file by replacing "
                         "it, give another name")
    above = Path(os.path.abspath(path)).parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ValueError(f"cannot write {path}: {above} is a file, not a folder")
    try:
        check_writable(above)
    except OSError as error:
        raise ValueError(write_error(error, path)) from error
    return path


def check_writable(folder: str | os.PathLike[str]) -> None:
    """OSError unless a file can be created in ``folder``: one is created under a
    temporary's name (never read as data) and removed at once."""
    _create_temp(Path(folder) / ".mmdtok-write-test").unlink()


# The causes of a failed write a user can act on, in their words.
_CAUSES = {errno.ENOSPC: "the disk is full (no space left on the device)",
           errno.EDQUOT: "the disk quota is exceeded",
           errno.EFBIG: "the file is too large (over the file-size limit, see ulimit -f)",
           errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted",
           errno.EROFS: "the file system is read-only",
           errno.EIO: "input/output error (a failing disk or network file system)"}


def failure_cause(error: OSError) -> str:
    """What went wrong in a user's words (disk full, file too large, permission, ...),
    from the error's errno, or the system's own words."""
    return (_CAUSES.get(error.errno) or error.strerror or str(error)
            or type(error).__name__)


def write_error(error: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """``cannot write PATH: CAUSE`` (:func:`failure_cause`)."""
    where = path if path is not None else error.filename
    return (f"cannot write {where}: {failure_cause(error)}" if where
            else f"write failed: {failure_cause(error)}")


_OS_ERROR = re.compile(r"os error (\d+)")


def save_safetensors(path: str | os.PathLike[str], tensors: dict,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> torch tensor) as a safetensors file, atomically. A
    failed write raises :class:`OSError` with its errno (safetensors reports it as text
    inside a ``SafetensorError``)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as temp:
        try:
            save_file(tensors, str(temp), metadata=metadata)
        except SafetensorError as error:
            found = _OS_ERROR.search(str(error))
            if found is None:
                raise
            code = int(found[1])
            raise OSError(code, os.strerror(code), os.fspath(path)) from error
    return Path(path)
