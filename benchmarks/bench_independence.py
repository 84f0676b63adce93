"""IndependenceLoss vs a dense reference of the same formulas, at the paper's per-GPU scale.

Streams of 256 clips, K = 4 codebooks, D = 128, T = 50 frames, delay pattern: the delay
keeps the T - K + 1 = 47 steps where no codebook is padding, N = 12,032 rows of 512
features (the published code drops one more step: 11,776). Forward and backward of

- ``shuffle`` (the paper's estimator) and ``exact`` (closed form), blocked, against dense
  N x N implementations written here as a user would (distance matrices by matrix
  product, Gaussian kernel matrices per bandwidth, checkpointed bandwidth by bandwidth as
  the published code checkpoints its loss, so that it fits in memory): the formulas agree
  in float64 (values at full size, gradients on 64 clips); in float32 both sides are
  compared with the float64 result; speed-up and peak memory ratio;
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
from mmdtok.losses.independence import standardize_rows, stream_rows

K, D, T = 4, 128, 50
BANDWIDTHS = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0)


def dense_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.t()).clamp(min=0)


def _shuffle_term(d_xx, d_yy, d_xy, a):
    n = d_xx.shape[0]
    k_xx, k_yy = torch.exp(-d_xx / (2 * a)), torch.exp(-d_yy / (2 * a))
    within = k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()
    return within / (n * (n - 1)) - 2 * torch.exp(-d_xy / (2 * a)).mean()


def _exact_term(d_0, d_1, d_2, d_3, a):
    grams = [torch.exp(-d / (2 * a)) for d in (d_0, d_1, d_2, d_3)]
    joint = grams[0] * grams[1] * grams[2] * grams[3]
    row_means = torch.stack([g.mean(1) for g in grams])
    return joint.mean() - 2 * row_means.prod(0).mean() + row_means.mean(1).prod()


def dense_loss(term, distances, checkpointed: bool) -> torch.Tensor:
    """Sum over bandwidths of ``term(*distances, a)``; with ``checkpointed`` each
    bandwidth's kernel matrices are recomputed in the backward pass (as the published
    code does for memory), else autograd keeps them all."""
    total = distances[0].new_zeros(())
    for a in BANDWIDTHS:
        if checkpointed:
            total = total + checkpoint(term, *distances, a, use_reentrant=False)
        else:
            total = total + term(*distances, a)
    return total


def dense_shuffle(x, y, checkpointed=True):
    return dense_loss(_shuffle_term, (dense_sqdist(x, x), dense_sqdist(y, y),
                                      dense_sqdist(x, y)), checkpointed)


def dense_exact(x, checkpointed=True):
    return dense_loss(_exact_term, [dense_sqdist(b, b) for b in x.split(D, dim=1)],
                      checkpointed)


def streams_like_a_codec(clips: int) -> torch.Tensor:
    """Quantized-looking streams: each codebook's vectors from 2,048 codes, codebook 1
    leaning on codebook 0."""
    generator = torch.Generator().manual_seed(0)
    codebooks = torch.randn(K, 2048, D, generator=generator)
    codes = torch.randint(2048, (clips, K, T), generator=generator)
    codes[:, 1] = (codes[:, 0] + torch.randint(8, (clips, T), generator=generator)) % 2048
    return torch.stack([codebooks[k][codes[:, k]] for k in range(K)], 1).permute(0, 1, 3, 2)


def value_and_gradient(fn, streams: torch.Tensor) -> tuple[float, float, int, torch.Tensor,
                                                            torch.Tensor]:
    """Seconds, peak memory, value and gradient of ``fn`` forward and backward."""
    x = streams.clone().requires_grad_()
    out = {}

    def call():
        value = fn(x)
        value.backward()
        out["value"] = value.detach()

    seconds, peak = peak_memory(call)
    return seconds, peak, out["value"], x.grad


def run_pair(name: str, ours_fn, dense_fn, streams: torch.Tensor, repeats: int) -> list[str]:
    """Float32 time and peak memory of both sides (interleaved), and their errors against
    the float64 value and gradient (ours in float64: the tests check it against dense)."""
    runs = {"ours": [], "dense": []}
    for _ in range(repeats):
        for side, fn in (("ours", ours_fn), ("dense", dense_fn)):
            runs[side].append(value_and_gradient(fn, streams))
            print(f"  {name} {side}: {runs[side][-1][0]:.1f} s", flush=True)
    _, _, truth, truth_grad = value_and_gradient(ours_fn, streams.double())

    def errors(side):
        _, _, value, grad = runs[side][-1]
        return (float((value.double() - truth).abs() / truth.abs()),
                float((grad.double() - truth_grad).norm() / truth_grad.norm()))

    (v_ours, g_ours), (v_dense, g_dense) = errors("ours"), errors("dense")
    t_ours = statistics.median(r[0] for r in runs["ours"])
    t_dense = statistics.median(r[0] for r in runs["dense"])
    m_ours, m_dense = max(r[1] for r in runs["ours"]), max(r[1] for r in runs["dense"])
    print(f"{name}: float64 value {float(truth):.6g}; float32 relative errors: value ours "
          f"{v_ours:.1e}, dense {v_dense:.1e}; gradient ours {g_ours:.1e}, dense {g_dense:.1e}",
          flush=True)
    return [name, f"{t_dense / t_ours:.1f}x", f"{m_ours / 2**20:,.0f} MiB",
            f"{m_dense / 2**20:,.0f} MiB", f"1/{m_dense / max(m_ours, 1):.0f}",
            f"{v_ours:.0e} / {v_dense:.0e}", f"{g_ours:.0e} / {g_dense:.0e}"]


def formula_check(streams: torch.Tensor, shuffle: IndependenceLoss) -> None:
    """Both sides in float64: values at full size (dense forward without a graph), and
    gradients on the first 64 clips."""
    def rows_of(x):
        return standardize_rows(stream_rows(x, "delay")[0])

    def ours_shuffle(x):
        return IndependenceLoss("shuffle", seed=shuffle.seed)(x)  # fresh: call 0

    def dense_shuffle_at(x, checkpointed=True):
        rows = rows_of(x)
        return dense_shuffle(rows, kernels.shuffle_rows(rows, [D] * K, shuffle.generator(0)),
                             checkpointed)

    exact = IndependenceLoss("exact")
    pairs = [("shuffle", ours_shuffle, dense_shuffle_at),
             ("exact", exact, lambda x, c=True: dense_exact(rows_of(x), c))]
    x64 = streams.double()
    small = x64[:64].clone().requires_grad_()
    for name, ours, dense in pairs:
        with torch.no_grad():
            full = float((ours(x64) - dense(x64, False)).abs() / dense(x64, False).abs())
        small_ours, small_dense = ours(small), dense(small, False)
        grad_ours = torch.autograd.grad(small_ours, small)[0]
        grad_dense = torch.autograd.grad(small_dense, small)[0]
        small_gap = float((small_ours - small_dense).detach().abs() / small_dense.detach().abs())
        print(f"{name} in float64: value relative difference {full:.1e} at full size; on 64 "
              f"clips value {small_gap:.1e}, "
              f"gradient {float((grad_ours - grad_dense).norm() / grad_dense.norm()):.1e}",
              flush=True)


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
        return IndependenceLoss("shuffle", seed=0)(x)  # the same permutations on every call

    def dense_shuffle_loss(x):
        rows = standardize_rows(stream_rows(x, "delay")[0])
        return dense_shuffle(rows, kernels.shuffle_rows(rows, [D] * K, shuffle.generator(0)))

    def dense_exact_loss(x):
        return dense_exact(standardize_rows(stream_rows(x, "delay")[0]))

    formula_check(streams, shuffle)
    rows = [run_pair("shuffle", ours_shuffle, dense_shuffle_loss, streams, args.repeats),
            run_pair("exact", IndependenceLoss("exact"), dense_exact_loss, streams,
                     args.repeats)]
    print(markdown_table(["estimator", "speed-up", "peak memory", "dense peak memory",
                          "memory ratio", "float32 value error (ours / dense)",
                          "float32 gradient error (ours / dense)"], rows))

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
