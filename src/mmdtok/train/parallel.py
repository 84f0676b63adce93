"""What the trainer needs from torch.distributed: the device of this rank, the DDP
wrapper, gradient averaging for the passes DDP does not see, and per-step seeds.

The process group itself is started by the caller (``mmdtok train-codec`` does it under
torchrun); in a single process every function here is the plain single-process case.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mmdtok.distributed import checked_device, is_distributed, world_size


def training_device(name: str) -> torch.device:
    """``"auto"``: this rank's GPU if CUDA is available, else the CPU. Under torchrun a
    bare ``"cuda"`` means the GPU numbered ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        return checked_device(name)
    except ValueError as error:
        raise ValueError(f"device={name!r}: {error}") from None


def process_group_backend(device: torch.device) -> str:
    """nccl for GPUs, gloo for CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DDP inside a process group, else itself. Buffers are not broadcast:
    mmdtok's codebooks are all-reduced by the quantizers and stay identical on their own."""
    if not is_distributed():
        return module
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the option (and deprecated the old name).
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(ddp.__init__).parameters else "broadcast_buffers")
    ids = [device.index] if device.type == "cuda" else None
    return ddp(module, device_ids=ids, **{sync: False})


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks (one flat all-reduce), for a backward pass that DDP
    does not see."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the global generators at ``step`` on ``rank``: random draws inside a
    step (quantizer dropout) depend on nothing else, so a resumed run needs no saved
    generator state and ranks draw differently."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0]
               >> 1)
