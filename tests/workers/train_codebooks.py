"""Train a quantizer for a few steps, alone or as one rank of a torchrun job.

Every step draws a global batch from a seeded generator; rank r of W takes samples
r*B/W .. (r+1)*B/W - 1, so one process on the whole batch sees the same rows in the same
order as the ranks together. The data drifts between steps so that codes die and are
replaced. Writes the final state dict (and the dead-code fractions seen) to OUT.

    torchrun --nproc-per-node 2 tests/workers/train_codebooks.py OUT KIND
    python tests/workers/train_codebooks.py OUT KIND
"""

import os
import sys

import torch
import torch.distributed as dist

from mmdtok.quantizers import CodebookOptions, ProductVQ, ResidualVQ

GLOBAL_BATCH, DIM, FRAMES, STEPS = 8, 16, 64, 6


def build(kind: str):
    options = {"num_codebooks": 4, "codebook_size": 64,
               "codebook": CodebookOptions(kmeans_iters=10, dead_code_threshold=0.5)}
    if kind == "rvq":
        return ResidualVQ(DIM, codebook_dropout="uniform", latent_norm=True, **options)
    return ProductVQ(DIM, codebook_dropout="uniform", **options)


def global_batch(step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1_000 + step)
    means = torch.randn(32, DIM, generator=generator) * (1 + step)  # drifting clusters
    which = torch.randint(32, (GLOBAL_BATCH, FRAMES), generator=generator)
    noise = 0.1 * torch.randn(GLOBAL_BATCH, FRAMES, DIM, generator=generator)
    return (means[which] + noise).transpose(1, 2).contiguous()


def main(out_path: str, kind: str) -> None:
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(rank)  # dropout draws differ per rank, as in real training
    quantizer = build(kind).train()
    local = GLOBAL_BATCH // world
    dead = []
    for step in range(STEPS):
        z = global_batch(step)[rank * local : (rank + 1) * local]
        out = quantizer(z)
        dead.append(torch.stack([out.metrics[f"dead_codes_{k}"] for k in range(4)]))
    state = {key: value.clone() for key, value in quantizer.state_dict().items()}
    state["dead_fractions"] = torch.stack(dead)
    torch.save(state, f"{out_path}.rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
