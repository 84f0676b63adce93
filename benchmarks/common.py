"""Shared helpers for the side-by-side benchmarks: interleaved timing and tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def compare(ours: Callable[[], object], theirs: Callable[[], object], *, repeats: int = 7,
            warmup: int = 2) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``theirs``, run alternately so that load on the
    machine hits both sides alike."""
    for _ in range(warmup):
        ours()
        theirs()
    times_ours, times_theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs()
        times_theirs.append(time.perf_counter() - start)
    return statistics.median(times_ours), statistics.median(times_theirs)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
