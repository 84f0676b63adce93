"""A lock on an output folder, so that two runs never write into one folder at a time.

The lock is an advisory ``flock`` on ``FOLDER/.mmdtok.lock``, which also records who
holds it (process, host, command, start time) for the message a second run prints. The
kernel releases it when its process ends, however it ends: after a kill, the next run
takes the folder over and resumes. Where ``fcntl`` is missing (Windows) folders are not
locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".mmdtok.lock"


class FolderInUse(ValueError):
    """Another run holds the lock on the output folder."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock on ``folder`` (which must exist) while the block runs; raises
    :class:`FolderInUse` at once, naming the holder, when another process holds it."""
    path = Path(folder) / LOCK_NAME
    descriptor = _acquire(path)
    try:
        yield path
    finally:
        if descriptor is not None:
            with contextlib.suppress(OSError):
                path.unlink()  # while still held: a waiting run then locks a new file
            os.close(descriptor)


def _acquire(path: Path) -> int | None:
    try:
        import fcntl
    except ImportError:
        return None
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise FolderInUse(f"{path.parent} is being written by another mmdtok run "
                              f"({holder}); wait for it to end, or choose another output "
                              "folder") from None
        try:  # its last holder may have removed the file in between: lock the new one
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": " ".join(["mmdtok", *sys.argv[1:]]),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(descriptor, 0)
    os.write(descriptor, (json.dumps(record) + "\n").encode())
    return descriptor


def _holder(descriptor: int) -> str:
    """Who holds the lock, in words, from what it recorded."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
        return (f"process {record['pid']} on {record['host']}, since {record['since']}: "
                f"{record['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


__all__ = ["LOCK_NAME", "FolderInUse", "folder_lock"]
