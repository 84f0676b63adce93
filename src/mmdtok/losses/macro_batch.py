"""Apply the independence loss on a macro-batch of M training steps, as in the paper."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmdtok.losses.independence import IndependenceLoss, Streams


class MacroBatchIndependence:
    """Accumulate the inputs of ``every`` training steps, then re-encode them all and
    return the independence loss of the whole macro-batch, for the caller to weight and
    back-propagate in a pass of its own.

    The MMD compares rows with each other, so it needs many more rows than one batch
    holds; storing the inputs (not the activations) and re-encoding them with gradient
    checkpointing keeps memory at one micro-batch's activations until the caller's
    backward pass. The paper uses M = 32 and weight 1e3, in a backward pass separate from
    the codec's other losses (outside any gradient balancer).

    Args:
        encode_streams: any callable ``inputs -> streams`` ([B, K, D, T] or K tensors
            [B, D_k, T]) whose output has a gradient to the parameters to train, e.g.
            ``lambda audio: quantizer(encoder(audio)).streams``. It is called twice per
            micro-batch (forward and recomputation), so it should not update state: run
            mmdtok quantizers in eval mode there (their streams keep their gradient).
        loss: the :class:`IndependenceLoss` (default: ``IndependenceLoss()``).
        every: M, the number of steps per macro-batch.
        use_checkpoint: recompute each micro-batch in the backward pass (default) or keep
            all activations.

    Usage, once per training step after the codec's own backward::

        value = macro.step(audio)   # None, or the loss of the macro-batch (M-th step)
        if value is not None:
            (weight * value).backward()

    Under torch.distributed every rank gets the same value (the macro-batch spans all
    ranks) and DDP averages the gradients of the W ranks: multiply the weight by W to
    apply the macro-batch's whole gradient (``mmdtok.distributed.world_size()``).
    """

    def __init__(self, encode_streams: Callable[[Tensor], Streams],
                 loss: IndependenceLoss | None = None, *, every: int = 32,
                 use_checkpoint: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.encode_streams = encode_streams
        self.loss = loss if loss is not None else IndependenceLoss()
        self.every, self.use_checkpoint = every, use_checkpoint
        self._inputs: list[Tensor] = []

    @property
    def pending(self) -> int:
        """Steps accumulated since the last macro-batch."""
        return len(self._inputs)

    def step(self, inputs: Tensor) -> Tensor | None:
        """Store this step's inputs; on the M-th step, return the loss of the macro-batch
        (a scalar with its graph: the caller weights it and calls ``backward``)."""
        self._inputs.append(inputs.detach())
        return self.flush() if len(self._inputs) >= self.every else None

    def refill(self, inputs: Sequence[Tensor]) -> None:
        """Put back the inputs accumulated before a restart (a resumed trainer re-creates
        them), so that the next macro-batch is the one an uninterrupted run would see."""
        if len(self._inputs) + len(inputs) >= self.every:
            raise ValueError(f"at most {self.every - 1} pending inputs, got "
                             f"{len(self._inputs) + len(inputs)}")
        self._inputs.extend(x.detach() for x in inputs)

    def flush(self) -> Tensor | None:
        """The loss of whatever is accumulated (e.g. at the end of an epoch), or None."""
        if not self._inputs:
            return None
        inputs, self._inputs = self._inputs, []
        return self.loss(concat_streams([self._encode(x) for x in inputs]))

    def _encode(self, inputs: Tensor) -> Streams:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self.encode_streams, inputs, use_reentrant=False)
        return self.encode_streams(inputs)


def concat_streams(batches: Sequence[Streams]) -> Streams:
    """Concatenate streams of several micro-batches along the batch axis."""
    if isinstance(batches[0], Tensor):
        return torch.cat(list(batches), dim=0)
    return [torch.cat(list(parts), dim=0) for parts in zip(*batches)]
