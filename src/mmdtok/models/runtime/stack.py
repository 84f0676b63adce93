"""A network half as a stack of layers, and the runners' view of it.

A :class:`LayerStack` applies its layers in order. The runners see it split at its
recurrent layer (at most one): ``front`` (convolutions with a finite reach, run on
pieces with context), the recurrent layer (run over consecutive windows with its state
carried), ``back`` (a finite reach again, run lagged). A stack without a recurrent
layer is all front. On a CPU without gradients, after :meth:`prepare_cpu_inference`,
the front and the back run their layers' time-major forms (:meth:`Layer.time_major
<mmdtok.models.runtime.layer.Layer.time_major>`) with their rearranged weights kept in
a :class:`~mmdtok.models.runtime.layer.WeightCache`; training mode drops them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmdtok.models.runtime.layer import (
    Layer,
    NotStreamable,
    SequenceStreamer,
    Streamer,
    WeightCache,
    context_frames,
    run_time_major,
)


class LayerStack(nn.Module):
    """Layers applied in order (:meth:`sequence`); ``samples_per_frame`` is what one
    frame spans at the input: the hop length for an encoder, 1 for a decoder."""

    samples_per_frame: float = 1.0

    def sequence(self) -> list[Layer]:
        """The layers in the order they apply (``self.layers`` unless overridden)."""
        return list(self.layers)

    # -- the split the runners see --------------------------------------------------
    def split(self) -> tuple[list[Layer], Layer | None, list[Layer]]:
        """(front layers, the recurrent layer or None, back layers)."""
        layers = self.sequence()
        recurrent = [i for i, layer in enumerate(layers) if layer.recurrent]
        if len(recurrent) > 1:
            raise ValueError(f"{type(self).__name__} has {len(recurrent)} recurrent layers; "
                             f"the runners take at most one a half")
        if not recurrent:
            return layers, None, []
        i = recurrent[0]
        return layers[:i], layers[i], layers[i + 1 :]

    @property
    def front_context(self) -> int:
        """Frames of context on each side that the front needs."""
        return context_frames(self.split()[0], self.samples_per_frame)[0]

    @property
    def front_scale(self) -> int:
        """Output steps per frame of the front (1 at the frame rate, the hop at audio)."""
        return round(context_frames(self.split()[0], self.samples_per_frame)[1])

    @property
    def back_context(self) -> int:
        return context_frames(self.split()[2], self.front_scale)[0]

    def peak_scale(self, stage: str) -> float:
        """The most steps per frame inside ``stage`` ("front" or "back"): the rate of its
        largest activations."""
        front, _, back = self.split()
        layers, scale = (front, self.samples_per_frame) if stage == "front" else (
            back, float(self.front_scale))
        peak = scale
        for layer in layers:
            scale = layer.reach(scale)[1]
            peak = max(peak, scale)
        return peak

    @property
    def causal(self) -> bool:
        return all(layer.causal for layer in self.sequence())

    # -- running --------------------------------------------------------------------
    def _run(self, layers: list[Layer], x: Tensor) -> Tensor:
        plan = getattr(self, "_plan", None)
        if plan is not None and not torch.is_grad_enabled() and x.device.type == "cpu":
            with torch.no_grad():
                return run_time_major(layers, x.transpose(1, 2).contiguous(),
                                      plan).transpose(1, 2)
        for layer in layers:
            x = layer(x)
        return x

    def front(self, x: Tensor) -> Tensor:
        return self._run(self.split()[0], x)

    def back(self, x: Tensor) -> Tensor:
        return self._run(self.split()[2], x)

    def initial_state(self, x: Tensor) -> Any:
        """The recurrent layer's initial state for x (None without one)."""
        recurrent = self.split()[1]
        return recurrent.initial_state(x) if recurrent is not None else None

    def recurrent_step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """The recurrent layer over x from ``state`` (the identity without one)."""
        recurrent = self.split()[1]
        return recurrent.step(x, state) if recurrent is not None else (x, state)

    def forward(self, x: Tensor) -> Tensor:
        return self.back(self.recurrent_step(self.front(x), None)[0])

    def streamer(self) -> Streamer:
        """The stack in streaming form (NotStreamable with the reason for a layer that
        looks ahead)."""
        try:
            return SequenceStreamer([layer.streamer() for layer in self.sequence()])
        except NotStreamable as error:
            raise NotStreamable(f"{type(self).__name__}: {error}") from None

    # -- the time-major CPU plan ----------------------------------------------------
    def prepare_cpu_inference(self) -> None:
        self._plan = WeightCache()

    def drop_cpu_inference(self) -> None:
        self._plan = None

    def train(self, mode: bool = True) -> LayerStack:
        if mode:
            self.drop_cpu_inference()
        return super().train(mode)


__all__ = ["LayerStack"]
