"""IndependenceLoss vs a dense reference of the same formulas, at the paper's per-GPU scale.

Streams of 256 clips, K = 4 codebooks, D = 128, T = 50 frames, delay pattern: the delay
keeps the T - K + 1 = 47 steps where no codebook is padding, N = 12,032 rows of 512
features (the published code drops one more step: 11,776). Forward and backward of

- ``shuffle`` (the paper's estimator) and ``exact`` (closed form), blocked, against dense
  N x N implementations written here as a user would (distance matrices by matrix
  product, one Gaussian kernel matrix per bandwidth, the whole loss checkpointed as in the
  published code so that it fits in memory): equal values (relative 1e-5) and gradients,
  speed-up and peak memory ratio;
- ``rff`` at 1,000,000 rows: peak memory of forward and backward (target < 4 GB beyond
  the input), and its agreement with ``exact`` on the N = 12,032 rows.

    python benchmarks/bench_independence.py [--clips 256] [--rff-rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table
from memory import peak_memory

from mmdtok.losses import IndependenceLoss, kernels
from mmdtok.losses.independence import standardize, stream_rows

K, D, T = 4, 128, 50
BANDWIDTHS = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0)


def dense_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.t()).clamp(min=0)


def dense_shuffle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d_xx, d_yy, d_xy = dense_sqdist(x, x), dense_sqdist(y, y), dense_sqdist(x, y)
    total = x.new_zeros(())
    for a in BANDWIDTHS:
        k_xx, k_yy = torch.exp(-d_xx / (2 * a)), torch.exp(-d_yy / (2 * a))
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum())
        total = total + within / (n * (n - 1)) - 2 * torch.exp(-d_xy / (2 * a)).mean()
    return total


def dense_exact(x: torch.Tensor) -> torch.Tensor:
    distances = [dense_sqdist(block, block) for block in x.split(D, dim=1)]
    total = x.new_zeros(())
    for a in BANDWIDTHS:
        grams = [torch.exp(-d / (2 * a)) for d in distances]
        joint = grams[0] * grams[1] * grams[2] * grams[3]
        row_means = torch.stack([g.mean(1) for g in grams])
        total = total + joint.mean() - 2 * row_means.prod(0).mean() + row_means.mean(1).prod()
    return total


def streams_like_a_codec(clips: int) -> torch.Tensor:
    """Quantized-looking streams: each codebook's vectors from 2,048 codes, codebook 1
    leaning on codebook 0."""
    generator = torch.Generator().manual_seed(0)
    codebooks = torch.randn(K, 2048, D, generator=generator)
    codes = torch.randint(2048, (clips, K, T), generator=generator)
    codes[:, 1] = (codes[:, 0] + torch.randint(8, (clips, T), generator=generator)) % 2048
    return torch.stack([codebooks[k][codes[:, k]] for k in range(K)], 1).permute(0, 1, 3, 2)


def run_pair(name: str, ours_fn, dense_fn, streams: torch.Tensor, repeats: int) -> list[str]:
    """Time, peak memory, value and gradient of both sides (interleaved runs)."""
    results = {"ours": [], "dense": []}
    outputs = {}
    for _ in range(repeats):
        for side, fn in (("ours", ours_fn), ("dense", dense_fn)):
            x = streams.clone().requires_grad_()

            def call(fn=fn, x=x, side=side):
                value = fn(x)
                value.backward()
                outputs[side] = (value.detach(), x.grad)

            results[side].append(peak_memory(call))
    (v_ours, g_ours), (v_dense, g_dense) = outputs["ours"], outputs["dense"]
    rel_value = float((v_ours - v_dense).abs() / v_dense.abs())
    rel_grad = float((g_ours - g_dense).norm() / g_dense.norm())
    t_ours = statistics.median(r[0] for r in results["ours"])
    t_dense = statistics.median(r[0] for r in results["dense"])
    m_ours = max(r[1] for r in results["ours"])
    m_dense = max(r[1] for r in results["dense"])
    print(f"{name}: value {float(v_ours):.6g} vs dense {float(v_dense):.6g} "
          f"(relative difference {rel_value:.1e}), gradient relative difference {rel_grad:.1e}",
          flush=True)
    return [name, f"{rel_value:.1e}", f"{rel_grad:.1e}", f"{t_dense / t_ours:.1f}x",
            f"{m_ours / 2**20:.0f} MiB", f"{m_dense / 2**20:.0f} MiB",
            f"1/{m_dense / max(m_ours, 1):.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--rff-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    streams = streams_like_a_codec(args.clips)
    num_rows = args.clips * (T - K + 1)
    print(f"{args.clips} clips x {K} codebooks x {D} dims x {T} frames, delay: N = {num_rows} "
          f"rows of {K * D} features; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)

    shuffle = IndependenceLoss("shuffle", seed=0)

    def ours_shuffle(x):
        shuffle.num_calls.zero_()
        return shuffle(x)

    def dense_shuffle_loss(x):
        rows = standardize(stream_rows(x, "delay")[0])
        y = kernels.shuffle_rows(rows, [D] * K, shuffle._generator())  # the same permutations
        return checkpoint(dense_shuffle, rows, y, use_reentrant=False)

    def dense_exact_loss(x):
        rows = standardize(stream_rows(x, "delay")[0])
        return checkpoint(dense_exact, rows, use_reentrant=False)

    rows = [run_pair("shuffle", ours_shuffle, dense_shuffle_loss, streams, args.repeats),
            run_pair("exact", IndependenceLoss("exact"), dense_exact_loss, streams,
                     args.repeats)]
    print(markdown_table(["estimator", "value rel. diff", "gradient rel. diff", "speed-up",
                          "peak memory", "dense peak memory", "memory ratio"], rows))

    rff = IndependenceLoss("rff", num_features=256)
    with torch.no_grad():
        exact_value = float(IndependenceLoss("exact")(streams))
        rff_values = [float(IndependenceLoss("rff", num_features=256, seed=s)(streams))
                      for s in range(5)]
    print(f"rff (256 features per bandwidth) on the same {num_rows} rows: mean "
          f"{statistics.mean(rff_values):.5g} +- {statistics.stdev(rff_values):.2g} over 5 "
          f"seeds, exact {exact_value:.5g}")
    clips = args.rff_rows // (T - K + 1) + 1
    big = torch.randn(clips, K, D, T).requires_grad_()
    seconds, peak = peak_memory(lambda: rff(big).backward())
    print(f"rff at {clips * (T - K + 1):,} rows ({big.numel() * 4 / 2**30:.2f} GiB of input): "
          f"forward+backward {seconds:.0f} s, peak memory beyond the input "
          f"{peak / 2**30:.2f} GiB (target < 4 GiB; includes the input's gradient)")


if __name__ == "__main__":
    main()
