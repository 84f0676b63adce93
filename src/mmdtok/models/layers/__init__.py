"""The layers of the networks, each kind in one file with what every runtime needs
(:mod:`mmdtok.models.runtime.layer`): padded convolutions and transposed convolutions
(:mod:`.conv`), pointwise activations (:mod:`.activations`), residual units
(:mod:`.residual`), the recurrent LSTM (:mod:`.lstm`)."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from mmdtok.models.layers.activations import (
    ACTIVATIONS,
    ELU,
    Activation,
    Identity,
    Pointwise,
    Snake,
    Tanh,
    activation,
    snake,
)
from mmdtok.models.layers.conv import (
    Conv1d,
    ConvTranspose1d,
    Norm,
    PadMode,
    conv_padding,
    normalized,
    pad1d,
    transposed_trim,
)
from mmdtok.models.layers.lstm import LSTMState, SkipLSTM
from mmdtok.models.layers.residual import ResidualUnit


def checked_shape(channels: int, ratios: tuple[int, ...]) -> tuple[int, ...]:
    """A network's ``ratios`` as a tuple of ints, after checking them and ``channels``
    (ValueError naming the bad value): 1 or 2 channels, 1 to 8 ratios in 1..64."""
    ratios = tuple(int(r) for r in ratios)
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if not ratios or min(ratios) < 1 or max(ratios) > 64 or len(ratios) > 8:
        raise ValueError(f"ratios must be 1 to 8 integers in 1..64, got {ratios}")
    return ratios


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrization under ``module`` by the plain weight it
    computes (inference: same output, one less operation per call). In place."""
    for child in module.modules():
        if parametrize.is_parametrized(child, "weight"):
            parametrize.remove_parametrizations(child, "weight", leave_parametrized=True)
    return module


__all__ = ["ACTIVATIONS", "ELU", "Activation", "Conv1d", "ConvTranspose1d", "Identity",
           "LSTMState", "Norm", "PadMode", "Pointwise", "ResidualUnit", "SkipLSTM", "Snake",
           "Tanh", "activation", "checked_shape", "conv_padding", "fold_weight_norm",
           "normalized", "pad1d", "snake", "transposed_trim"]
