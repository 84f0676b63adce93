"""Apply the independence loss on a macro-batch of M training steps, as in the paper."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmdtok.distributed import world_size
from mmdtok.losses.independence import IndependenceLoss, Streams


class MacroBatchIndependence:
    """Accumulate the inputs of ``every`` training steps, then re-encode them all and take
    one backward pass of ``weight * loss`` on the whole macro-batch.

    The MMD compares rows with each other, so it needs many more rows than one batch
    holds; storing the inputs (not the activations) and re-encoding them with gradient
    checkpointing keeps memory at one micro-batch's activations. The paper uses M = 32
    and weight 1e3, in a backward pass separate from the codec's other losses (outside
    any gradient balancer).

    Args:
        encode_streams: any callable ``inputs -> streams`` ([B, K, D, T] or K tensors
            [B, D_k, T]) whose output has a gradient to the parameters to train, e.g.
            ``lambda audio: quantizer(encoder(audio)).streams``. It is called twice per
            micro-batch (forward and recomputation), so it should not update state: run
            mmdtok quantizers in eval mode there (their streams keep their gradient).
        loss: the :class:`IndependenceLoss` (default: ``IndependenceLoss()``).
        every: M, the number of steps per macro-batch.
        weight: the loss weight. Under torch.distributed it is multiplied by the world
            size, so that DDP's averaging of gradients leaves the macro-batch gradient.
        use_checkpoint: recompute each micro-batch in the backward pass (default) or keep
            all activations.

    Usage, once per training step after the codec's own backward::

        value = macro.step(audio)   # None, or the loss value on the M-th step
    """

    def __init__(self, encode_streams: Callable[[Tensor], Streams],
                 loss: IndependenceLoss | None = None, *, every: int = 32,
                 weight: float = 1e3, use_checkpoint: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.encode_streams = encode_streams
        self.loss = loss if loss is not None else IndependenceLoss()
        self.every, self.weight, self.use_checkpoint = every, weight, use_checkpoint
        self._inputs: list[Tensor] = []

    @property
    def pending(self) -> int:
        """Steps accumulated since the last macro-batch."""
        return len(self._inputs)

    def step(self, inputs: Tensor) -> Tensor | None:
        """Store this step's inputs; on the M-th step, back-propagate the weighted loss
        and return its (unweighted, detached) value."""
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
        """Run the loss on whatever is accumulated (e.g. at the end of an epoch)."""
        if not self._inputs:
            return None
        inputs, self._inputs = self._inputs, []
        streams = concat_streams([self._encode(x) for x in inputs])
        value = self.loss(streams)
        (value * (self.weight * world_size())).backward()
        return value.detach()

    def _encode(self, inputs: Tensor) -> Streams:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self.encode_streams, inputs, use_reentrant=False)
        return self.encode_streams(inputs)


def concat_streams(batches: Sequence[Streams]) -> Streams:
    """Concatenate streams of several micro-batches along the batch axis."""
    if isinstance(batches[0], Tensor):
        return torch.cat(list(batches), dim=0)
    return [torch.cat(list(parts), dim=0) for parts in zip(*batches)]
