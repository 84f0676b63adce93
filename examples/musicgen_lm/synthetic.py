"""Codes of known dependence, and the factorization gap measured on them against the
analytic conditional total correlation.

    python -m examples.musicgen_lm.synthetic [--seeds 0 1 2]

Every frame is drawn independently: codebook 1 equals codebook 0 of the same frame with
probability p, else it is uniform; the other codebooks are uniform. The conditional
total correlation of the codes an LM step predicts together, given the past, is then
known exactly:

- parallel layout: a step holds the K codes of one frame, so it is I(z0; z1);
- delay layout: a step holds codebook 0 of frame t and codebook 1 of frame t - 1, whose
  own codebook 0 is already in the past, so it is 0;
- p = 0 (independent codebooks): 0 under both.

For each case and seed this trains the factorized and the depth-head LM
(:func:`examples.musicgen_lm.gap.factorization_gap`) and prints the measured gap, its
bootstrap interval and the analytic value.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import torch

from examples.musicgen_lm.data import TokenSet
from examples.musicgen_lm.gap import factorization_gap
from examples.musicgen_lm.model import LMConfig
from examples.musicgen_lm.train import LMTraining

SIZE, CODEBOOKS, FRAMES = 8, 3, 16
SHAPE = {"dim": 32, "layers": 1, "heads": 2, "dropout": 0.0, "depth_dim": 32}
TRAINING = LMTraining(steps=250, batch_size=32, lr=3e-3, warmup_steps=10)


def copied_codes(count: int, frames: int, size: int, p: float, k: int = CODEBOOKS,
                 seed: int = 0) -> torch.Tensor:
    """[count, k, frames], every frame independent: codebook 1 equal to codebook 0 of the
    same frame with probability p, else uniform; the other codebooks uniform."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(size, (count, k, frames), generator=generator)
    copy = torch.rand(count, frames, generator=generator) < p
    codes[:, 1] = torch.where(copy, codes[:, 0], codes[:, 1])
    return codes


def copy_information(size: int, p: float) -> float:
    """I(z0; z1) in nats for :func:`copied_codes`: log C - H(z1 | z0)."""
    if p == 0:
        return 0.0
    same, other = p + (1 - p) / size, (1 - p) / size
    conditional = -same * math.log(same) - (size - 1) * other * math.log(other)
    return math.log(size) - conditional


def token_set(codes: torch.Tensor, size: int) -> TokenSet:
    return TokenSet(list(codes), size, "synthetic", "", 50.0)


def measure(p: float, pattern: str, seed: int = 0, training: LMTraining = TRAINING,
            train_clips: int = 8192, test_clips: int = 96) -> dict:
    """gap.json's facts for one case; the data drawn from ``seed``, the LM from ``seed``."""
    tokens = token_set(copied_codes(train_clips, FRAMES, SIZE, p, seed=2 * seed + 1), SIZE)
    held_out = token_set(copied_codes(test_clips, FRAMES, SIZE, p, seed=2 * seed + 2), SIZE)
    config = LMConfig(CODEBOOKS, SIZE, pattern, FRAMES, **SHAPE)
    training = replace(training, seed=seed)
    return factorization_gap(config, training, tokens, held_out, progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("-p", type=float, default=0.7, help="probability of a copy")
    args = parser.parse_args(argv)
    print(f"{SIZE} codes, {CODEBOOKS} codebooks, {TRAINING.steps} LM steps; nats per frame")
    print("| case | layout | analytic | seed | measured gap | 95% interval |")
    print("|---|---|---|---|---|---|")
    for p, pattern in ((args.p, "parallel"), (args.p, "delay"), (0.0, "parallel")):
        truth = copy_information(SIZE, p) if pattern == "parallel" else 0.0
        for seed in args.seeds:
            facts = measure(p, pattern, seed)
            low, high = facts["gap_ci95"]
            print(f"| copy p = {p:g} | {pattern} | {truth:.3f} | {seed} | {facts['gap']:.3f} "
                  f"| [{low:.3f}, {high:.3f}] |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
