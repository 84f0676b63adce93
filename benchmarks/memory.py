"""Peak resident memory of a call, sampled from /proc (Linux) by a background thread."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _release_free_memory() -> None:
    """Give freed heap memory back to the system so that the next baseline is honest."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_memory(fn: Callable[[], object], interval: float = 0.002) -> tuple[float, int]:
    """Run ``fn``; return its seconds and its peak resident memory above the baseline,
    in bytes."""
    _release_free_memory()
    baseline, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss())
    return seconds, peak[0] - baseline
