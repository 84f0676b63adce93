"""Training checkpoints (written atomically, read without unpickling code) and the
exponential moving average of the weights."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdtok.atomic import atomic_path


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) so that the
    file under ``path`` is always a complete checkpoint, old or new."""
    with atomic_path(path) as temp, open(temp, "wb") as file:
        try:
            torch.save(state, file)
        except RuntimeError as error:  # torch's zip writer reports a failed write so
            cause = error.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, os.fspath(path)) from error
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: plain data only, never code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"cannot read checkpoint {path}: it holds Python objects other "
                         "than tensors, numbers, strings, lists and dicts, and mmdtok never "
                         "unpickles code; it was not written by mmdtok's trainer") from error
    except (RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "empty file"
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a checkpoint): "
                         f"{first}") from error


class WeightEma:
    """``ema = decay * ema + (1 - decay) * weights`` after each step; buffers (codebooks,
    counters) are copied as they are. ``model`` is a deep copy used for evaluation and
    for the exported codec."""

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        ema_params = dict(self.model.named_parameters())
        for name, param in module.named_parameters():
            ema_params[name].lerp_(param.detach(), 1 - self.decay)
        ema_buffers = dict(self.model.named_buffers())
        for name, buffer in module.named_buffers():
            ema_buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
