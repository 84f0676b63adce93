"""A pytest plugin: a skipped test fails unless its reason names a GPU (CUDA).

The suite must run whole on a fresh machine after ``pip install -e ".[dev]"``: a missing
dev dependency, renderer or data file is a failure to fix, not a skip to overlook. Only a
GPU is truly optional. Registered by ``tests/conftest.py``.
"""

from __future__ import annotations

import re

import pytest

GPU = re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple)
                     else report.longrepr)
        if not GPU.search(reason):
            report.outcome = "failed"
            report.longrepr = (f"skipped for a reason other than a missing GPU: {reason} "
                               "(the suite must run whole after pip install -e \".[dev]\")")
