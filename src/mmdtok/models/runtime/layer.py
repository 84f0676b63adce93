"""What a layer tells every runtime: the one protocol between the layers and the runners.

A network half is a :class:`~mmdtok.models.runtime.stack.LayerStack` of :class:`Layer`
modules. Each layer kind is written once, in one file, with what each way of running it
needs; the runners (the whole pass, the time-major CPU plan, chunked encoding, streaming,
ONNX export) only call these methods and know no layer by name:

==================  ==========================================================  ===========
method              what it gives                                               runner
==================  ==========================================================  ===========
``forward``         the whole input at once, channels-first [B, C, L]           whole pass
``reach``           frames of context on each side, and the rate after it       chunked
``recurrent``       carries a state over the whole past (at most one a half)    chunked
``initial_state``,  the recurrent layer's state and its step over a piece       chunked
``step``
``causal``          looks only back (streams exactly)                           streaming
``streamer``        a :class:`Streamer`: the layer's state and its step         streaming
``time_major``      the layer on time-major [B, L, C] rows, fused with the      CPU plan
                    layers after it where that pays
``accepts``         an input length the general code path handles               export
``prepare_export``  the layer in a form torch.export traces (in place)          export
``onnx_translations``  ONNX translations of the custom operators it calls       export
==================  ==========================================================  ===========

A composite layer (its sublayers applied in order) gets every method from its
sublayers by default; a leaf layer with no override is pointwise (no reach, streams as
it is, time-major through its own forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def nothing() -> Tensor:
    """The empty output of a streaming step that has nothing to emit yet."""
    return torch.empty(0)


def cat_rows(parts: Sequence[Tensor]) -> Tensor:
    """The non-empty parts joined along the time axis of time-major [B, n, C] rows."""
    parts = [t for t in parts if t.numel()]
    if not parts:
        return nothing()
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


class NotStreamable(ValueError):
    """A layer that looks ahead (a centred convolution) cannot stream exactly."""


class Streamer:
    """One layer in streaming form, on time-major rows: ``push`` takes [B, n, C] and
    returns the rows it determines, ``flush`` the rest once the input has ended (both
    :func:`nothing` when there is none). ``count(n)``: rows emitted in all after ``n``
    input rows (before the flush). The default is a pointwise layer's."""

    def __init__(self, layer: Layer | None = None) -> None:
        self.layer = layer

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return nothing()
        assert self.layer is not None
        return self.layer.time_major(x, None, ())[0]

    def flush(self) -> Tensor:
        return nothing()

    def count(self, n: int) -> int:
        return n


class SequenceStreamer(Streamer):
    """Streamers applied one after the other (a composite layer, a whole stack)."""

    def __init__(self, streamers: Sequence[Streamer]) -> None:
        super().__init__()
        self.streamers = list(streamers)

    def count(self, n: int) -> int:
        for streamer in self.streamers:
            n = streamer.count(n)
        return n

    def push(self, x: Tensor) -> Tensor:
        for streamer in self.streamers:
            if not x.numel():
                return nothing()
            x = streamer.push(x)
        return x

    def flush(self) -> Tensor:
        x = nothing()
        for streamer in self.streamers:
            x = cat_rows([streamer.push(x) if x.numel() else x, streamer.flush()])
        return x


def version(tensor: Tensor) -> int:
    """The in-place update count of ``tensor``; -1 for a tensor made in inference mode,
    which keeps none (its weights are not updated in place)."""
    return -1 if tensor.is_inference() else tensor._version


class WeightCache:
    """Weights rearranged for a runner, kept per layer and rebuilt when the tensor they
    come from changed: another tensor, new storage under the same parameter (``.double()``,
    ``.to(device)``), or an in-place update such as ``load_state_dict``."""

    def __init__(self) -> None:
        self._cached: dict[tuple[int, str], tuple[Tensor, tuple, Any]] = {}

    def get(self, layer: nn.Module, source: Tensor, build: Callable[[], Any],
            key: str = "") -> Any:
        cached = self._cached.get((id(layer), key))
        stamp = (source.data_ptr(), source.dtype, source.device, version(source))
        if cached is None or cached[0] is not source or cached[1] != stamp:
            cached = (source, stamp, build())
            self._cached[(id(layer), key)] = cached
        return cached[2]


class Layer(nn.Module):
    """A module every runtime can run (see the table above)."""

    recurrent = False

    def sublayers(self) -> list[Layer]:
        """The layers this one applies in order (none for a leaf)."""
        return [m for m in self.children() if isinstance(m, Layer)]

    def reach(self, scale: float) -> tuple[float, float]:
        """(frames of context on each side beyond which the output does not depend on the
        input, samples per frame after the layer), for an input of ``scale`` samples per
        frame: the hop length at an encoder's input, 1 at a decoder's."""
        total = 0.0
        for layer in self.sublayers():
            reach, scale = layer.reach(scale)
            total += reach
        return total, scale

    @property
    def causal(self) -> bool:
        """Whether each output depends only on inputs up to it (the layer streams)."""
        return all(layer.causal for layer in self.sublayers())

    def streamer(self) -> Streamer:
        """The layer's streaming state and step (NotStreamable when it looks ahead)."""
        if not self.causal:
            raise NotStreamable(f"{type(self).__name__} looks ahead: it cannot stream")
        parts = self.sublayers()
        return SequenceStreamer([p.streamer() for p in parts]) if parts else Streamer(self)

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        """The layer on time-major x [B, L, C] -> (y [B, L', C'], how many of the
        ``following`` layers it also applied). ``owned``: x may be overwritten. ``plan``
        keeps rearranged weights between calls (None: build them for this call)."""
        parts = self.sublayers()
        if parts:
            return run_time_major(parts, x, plan, owned), 0
        return self(x.transpose(1, 2)).transpose(1, 2).contiguous(), 0

    def accepts(self, length: int) -> bool:
        """Whether an input of ``length`` steps takes the general code path (the one a
        graph traced at a longer input holds)."""
        return True

    def prepare_export(self) -> None:
        """Put the layer in a form torch.export traces into a compact graph (in place)."""

    def onnx_translations(self) -> dict[Any, Callable[..., Any]]:
        """ONNX translations of the custom operators :meth:`prepare_export` introduced."""
        return {}


def run_time_major(layers: Sequence[Layer], x: Tensor, plan: WeightCache | None,
                   owned: bool = False) -> Tensor:
    """Apply ``layers`` in order to time-major x [B, L, C] through their ``time_major``."""
    layers = list(layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if not isinstance(layer, Layer):
            raise TypeError(f"{type(layer).__name__} is not a runtime layer "
                            f"(mmdtok.models.runtime.layer.Layer)")
        x, consumed = layer.time_major(x, plan, layers[i + 1 :], owned)
        owned, i = True, i + 1 + consumed
    return x


def context_frames(layers: Sequence[Layer], samples_per_frame: float) -> tuple[int, float]:
    """(frames of context on each side that ``layers`` need, a conservative bound; the
    samples per frame after them)."""
    total, scale = 0.0, float(samples_per_frame)
    for layer in layers:
        reach, scale = layer.reach(scale)
        total += reach
    return math.ceil(total) + 1, scale


__all__ = ["Layer", "NotStreamable", "SequenceStreamer", "Streamer", "WeightCache",
           "cat_rows", "context_frames", "nothing", "run_time_major", "version"]
