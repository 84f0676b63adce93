import os

import pytest
import torch

from tests.strict_skips import pytest_runtest_makereport  # noqa: F401  (a hook)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each worker takes its share of the cores, and so do the processes
    # its tests start (torchrun ranks, command-line runs): more threads than cores makes
    # the OpenMP pools of the workers spin against each other.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


# The files that take longest (in either tier), run first: pytest-xdist hands whole files
# to the workers in collection order (--no-loadscope-reorder), and a long file handed out
# last would run alone at the end.
LONGEST_FIRST = ("test_export_musicgen.py", "test_cli_errors.py", "test_streaming.py",
                 "test_loop.py", "test_paper_experiment.py", "test_evaluation.py",
                 "test_gap.py", "test_dac.py", "test_distributed.py", "test_cli_codec.py",
                 "test_export.py", "test_chunked.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as is


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """(folder, pieces) of the tiny corpus recipe, rendered once per session."""
    from tests.examples.corpus import load_script, require_renderer

    renderer = require_renderer()
    script = load_script()
    out = tmp_path_factory.mktemp("tiny_corpus")
    pieces = script.render(script.RECIPES["tiny"], out, renderer=renderer, jobs=2,
                           progress=False)
    return out, pieces
