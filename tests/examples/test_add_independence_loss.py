"""examples/add_independence_loss.py at a small size: the loss lowers what it measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).parents[2] / "examples" / "add_independence_loss.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("add_independence_loss", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_loss_lowers_the_dependence_of_the_code_vectors_in_every_seed(example):
    results = example.compare(steps=150, seeds=[0, 1], weight=10.0, verbose=False)
    for without, with_loss in zip(results[0.0], results[10.0]):
        code, streams, error = with_loss
        assert streams < 0.8 * without[1]  # the stream dependence, what the loss optimizes
        assert 0.0 <= code <= 0.5 and 0.0 < error < 1.0  # a codec that trained
        assert without[2] < 1.0


def test_every_quantizer_setting_the_toy_depends_on_is_passed_explicitly(example):
    import inspect

    from vector_quantize_pytorch import VectorQuantize

    defaults = inspect.signature(VectorQuantize.__init__).parameters
    for name in ("kmeans_init", "decay", "threshold_ema_dead_code", "commitment_weight"):
        assert name in example.QUANTIZER and name in defaults
    assert "rotation_trick" in inspect.signature(example.train).parameters
