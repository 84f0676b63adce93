"""Thin helpers over torch.distributed: every function is a no-op in a single process.

Codebook statistics use them so that all ranks hold bit-identical codebooks, equal to
what one process would compute on the concatenated batch. Nothing here starts or
configures a process group: that is torchrun's and the user's job.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum", "checked_device", "gather_rows", "global_row_offset",
           "is_distributed", "rank", "rank_row_counts", "sample_global_rows", "shared_sum",
           "synced_sum", "world_size"]


def checked_device(name: str) -> torch.device:
    """The torch device ``name`` (``cpu``, ``cuda``, ``cuda:1``, ...) once it is known to
    be usable here; ValueError saying why not (no CUDA in this torch, no such GPU, a
    device type mmdtok does not run on, a name torch does not know)."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError("not a torch device (cpu, cuda, cuda:1, ...)") from error
    if device.type not in {"cpu", "cuda"}:
        raise ValueError("mmdtok runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CUDA is not available to this torch ({torch.__version__}); "
                         "use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks in place (and return it)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def rank_row_counts(num_rows: int, device: torch.device) -> list[int]:
    """Every rank's ``num_rows``, in rank order (``[num_rows]`` in a single process)."""
    if not is_distributed():
        return [num_rows]
    counts = torch.zeros(world_size(), dtype=torch.int64, device=device)
    counts[rank()] = num_rows
    return all_reduce_sum(counts).tolist()


def global_row_offset(num_rows: int, device: torch.device) -> tuple[int, int]:
    """Where this rank's rows start in the rank-ordered concatenation, and the total.

    Rank r's rows come after those of ranks 0..r-1, which is the row order of one process
    holding the concatenated batch.
    """
    counts = rank_row_counts(num_rows, device)
    return sum(counts[: rank()]), sum(counts)


def sample_global_rows(rows: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """Draw ``num`` rows from the concatenation of every rank's ``rows`` [N_r, D].

    ``generator`` must be in the same state on every rank (seed it from shared values):
    all ranks then draw the same global indices, each rank fills in the rows it owns and
    a sum over ranks assembles the sample. Rows are drawn without replacement when there
    are enough of them. The result is identical on every rank and equal to the
    single-process draw from the concatenated rows.
    """
    offset, total = global_row_offset(rows.shape[0], rows.device)
    if total == 0:
        raise ValueError("cannot sample rows from an empty batch")
    if total >= num:
        index = torch.randperm(total, generator=generator)[:num]
    else:
        index = torch.randint(total, (num,), generator=generator)
    index = index.to(rows.device)
    if not is_distributed():
        return rows[index]
    mine = (index >= offset) & (index < offset + rows.shape[0])
    sample = rows.new_zeros(num, rows.shape[1])
    sample[mine] = rows[index[mine] - offset]
    return all_reduce_sum(sample)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order; the gradient of this rank's slice
    flows back to this rank's rows.

    Every rank computes the same loss from the gathered rows, so the upstream gradient is
    the same on every rank and the slice of it that belongs to this rank's rows is already
    the full gradient of those rows: no communication is needed backwards.
    """

    @staticmethod
    def forward(ctx, rows: Tensor) -> Tensor:  # type: ignore[override]
        sizes = rank_row_counts(rows.shape[0], rows.device)
        padded = rows.new_zeros(max(sizes), *rows.shape[1:])
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.size = sum(sizes[: rank()]), rows.shape[0]
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad[ctx.start : ctx.start + ctx.size]


class _DifferentiableSum(torch.autograd.Function):
    """Sum over ranks, with one of the two backward rules of a sum that every rank uses:

    - ``sum_grads=False``: each rank computes the same loss from the sum (a loss over
      gathered statistics), so the upstream gradient is the same on every rank and passes
      through unchanged;
    - ``sum_grads=True``: each rank computes its own loss from the sum (a synchronized
      batch norm), so each rank's addend gets the sum of every rank's gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, sum_grads: bool) -> Tensor:  # type: ignore[override]
        ctx.sum_grads = sum_grads
        return all_reduce_sum(x.clone())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return (all_reduce_sum(grad.clone()) if ctx.sum_grads else grad), None


def gather_rows(rows: Tensor) -> Tensor:
    """[N_r, ...] on each rank -> [sum N_r, ...] on every rank, differentiable: this rank's
    rows get the gradient of the loss computed (identically on every rank) from all rows.
    The identity in a single process."""
    return _GatherRows.apply(rows) if is_distributed() else rows


def shared_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks, for a loss that every rank computes identically from it:
    differentiable in the same sense as :func:`gather_rows`."""
    return _DifferentiableSum.apply(x, False) if is_distributed() else x


def synced_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks, for a loss that each rank computes on its own from it
    (statistics shared by per-rank losses): the backward pass sums the gradients over
    ranks too."""
    return _DifferentiableSum.apply(x, True) if is_distributed() else x
