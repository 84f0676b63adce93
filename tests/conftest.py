import pytest
import torch

from tests.strict_skips import pytest_runtest_makereport  # noqa: F401  (a hook)


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
