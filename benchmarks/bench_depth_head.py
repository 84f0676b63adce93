"""The depth head's training cost against the factorized heads, one process.

The joint LM of ``examples/musicgen_lm`` (``head="depth"``) runs the same temporal
transformer as the factorized LM and a small transformer over the K codes of each step.
This times a full training step (forward, cross-entropy, backward, AdamW) of both on the
same batches, interleaved, and prints the ratio depth / factorized (target: under 1.3x at
K = 4), for the LM's default shape and for the shape of the paper experiment.

    python benchmarks/bench_depth_head.py [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from common import compare, markdown_table

from examples.musicgen_lm.model import LMConfig, MusicGenLM, loss_per_codebook

# (name, LM shape, batch): K = 4 codebooks of 1,024 codes, as the shipped codec makes.
SHAPES = [
    ("default (256 wide, 4 layers, 150 frames; depth head 128 wide)",
     LMConfig(4, 1024, "delay", 150, dim=256, layers=4, heads=4, depth_dim=128), 16),
    ("paper experiment (128 wide, 4 layers, 50 frames; depth head 64 wide)",
     LMConfig(4, 1024, "delay", 50, dim=128, layers=4, heads=4, dropout=0.0, depth_dim=64),
     16),
]


def training_step(config: LMConfig, codes: torch.Tensor, device: torch.device):
    torch.manual_seed(0)
    model = MusicGenLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = loss_per_codebook(model, codes).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name, config, batch in SHAPES:
        codes = torch.randint(config.codebook_size, (batch, config.num_codebooks,
                                                     config.frames),
                              generator=torch.Generator().manual_seed(0)).to(device)
        depth, depth_params = training_step(replace(config, head="depth"), codes, device)
        flat, flat_params = training_step(config, codes, device)
        seconds_depth, seconds_flat = compare(depth, flat, repeats=args.repeats)
        rows.append([name, f"{batch}", f"{flat_params / 1e6:.2f} M", f"{depth_params / 1e6:.2f} M",
                     f"{seconds_depth / seconds_flat:.2f}x"])
        print(rows[-1], flush=True)
    print(markdown_table(["LM shape", "batch", "parameters (factorized)",
                          "parameters (depth)", "step time depth / factorized"], rows))


if __name__ == "__main__":
    main()
