"""Compute the independence loss and its gradient, alone or as one rank of torchrun.

Rank r of W holds samples r*B/W .. (r+1)*B/W - 1 of a fixed global batch of streams, so
one process on the whole batch sees the same rows in the same order. Writes, per
configuration, the loss and the gradient of this rank's streams to OUT.rankR.pt.

    torchrun --nproc-per-node 2 tests/workers/independence_loss.py OUT
    python tests/workers/independence_loss.py OUT
"""

import os
import sys

import torch
import torch.distributed as dist

from mmdtok.losses import IndependenceLoss

CONFIGS = {
    "shuffle": {"estimator": "shuffle"},
    "shuffle_clips": {"estimator": "shuffle", "normalization": "clips"},
    "exact": {"estimator": "exact", "block_size": 7},
    "exact_median": {"estimator": "exact", "bandwidths": "median"},
    "rff": {"estimator": "rff", "num_features": 64},
    "rff_median": {"estimator": "rff", "bandwidths": "median", "num_features": 64},
}


def global_streams() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    streams = torch.randn(6, 3, 4, 9, generator=generator, dtype=torch.float64)
    streams[:, 1] += streams[:, 0]  # dependent codebooks
    return streams


def main(out_path: str) -> None:
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    local = global_streams().shape[0] // world
    results = {}
    for name, options in CONFIGS.items():
        streams = global_streams()[rank * local : (rank + 1) * local].requires_grad_()
        loss = IndependenceLoss(**options, seed=11)(streams)
        loss.backward()
        results[f"{name}.loss"] = loss.detach()
        results[f"{name}.grad"] = streams.grad
    torch.save(results, f"{out_path}.rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
