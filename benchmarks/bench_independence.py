"""IndependenceLoss vs the published formula, at the paper's per-GPU scale.

Streams of 256 clips, K = 4 codebooks, D = 128, T = 50 frames, delay pattern: the delay
keeps the T - K + 1 = 47 steps where no codebook is padding, N = 12,032 rows of 512
features (the published code drops one more step: 11,776; both sides here use the same
rows). Forward and backward, each side in its own fresh process, the sides interleaved:

- ``published``: the published implementation's formula as REFERENCE.md states it (three
  dense N x N distance matrices by one matrix product each, the Gaussian kernel sums of
  each of the 6 bandwidths under activation checkpointing, n = the number of clips);
- ``published-ftz``: the same with denormal floats flushed to zero
  (``torch.set_flush_denormal(True)``): the bandwidth-5 kernel of standardized 512-dimensional
  rows is otherwise almost all denormal, which the CPU computes many times more slowly;
- ``published-lean``: the same algorithm (dense matrices, checkpointed kernel sums) with
  the fewest passes over the N x N matrices: norms added in place to the product, one
  scaling and an in-place exponential per kernel, denormals flushed;
- the ``paper`` and ``default`` presets (the shuffle estimator, normalized by clips and
  by rows) and ``exact`` (the closed form);

with the speed-up over ``published`` (median and range over the rounds), the peak memory,
the fraction of the shuffle estimator's floors (its matrix products and exponentials at
the rates measured on this machine, for the two-pass and the one-pass algorithm) and
the float32 errors against float64. Before that, the formulas are checked in float64
against dense versions; after it, ``rff`` at 1,000,000 rows: peak memory of forward and
backward (target < 4 GB beyond the input), and its agreement with ``exact`` on the N = 12,032 rows.

    python benchmarks/bench_independence.py [--clips 256] [--repeats 3] [--rff-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table, median_seconds
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


def dense_loss(term, distances) -> torch.Tensor:
    """Sum over bandwidths of ``term(*distances, a)`` (autograd keeps every kernel matrix:
    the float64 formula check, not a timed side)."""
    return sum(term(*distances, a) for a in BANDWIDTHS)


def dense_shuffle(x, y):
    return dense_loss(_shuffle_term, (dense_sqdist(x, x), dense_sqdist(y, y),
                                      dense_sqdist(x, y)))


def dense_exact(x):
    return dense_loss(_exact_term, [dense_sqdist(b, b) for b in x.split(D, dim=1)])


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


def _published_formula(streams: torch.Tensor, generator: torch.Generator, distances,
                       kernel_sum) -> torch.Tensor:
    """The published algorithm with its two dense operations given: ``distances(a, b)``
    (an N x N matrix) and ``kernel_sum(d, a)`` (the sum of a Gaussian kernel matrix)."""
    rows = standardize_rows(stream_rows(streams, "delay")[0])
    shuffled = kernels.shuffle_rows(rows, [D] * K, generator)
    n = streams.shape[0]

    def term(d_xx, d_yy, d_xy, a):
        s_xx, s_yy, s_xy = (kernel_sum(d, a) for d in (d_xx, d_yy, d_xy))
        return ((s_xx - n) / (n * (n - 1)) + (s_yy - n) / (n * (n - 1))
                - 2 * s_xy / n**2).clamp(min=0)

    d = (distances(rows, rows), distances(shuffled, shuffled), distances(rows, shuffled))
    return sum(checkpoint(term, *d, a, use_reentrant=False) for a in BANDWIDTHS)


def published_loss(streams: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The published implementation's formula as REFERENCE.md states it: standardized
    delayed rows, each codebook's rows permuted, three dense N x N squared-distance
    matrices by one matrix product each, then for each of the 6 bandwidths the Gaussian
    kernel sums under activation checkpointing and ``(S_xx - n) / (n (n - 1)) + (S_yy - n)
    / (n (n - 1)) - 2 S_xy / n^2`` clamped at 0, with n = the number of clips."""
    return _published_formula(
        streams, generator,
        lambda a, b: a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.t(),
        lambda d, a: torch.exp(-d / (2 * a)).sum())


def published_lean_loss(streams: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """:func:`published_loss` with the fewest passes over the N x N matrices that its
    algorithm allows: each distance matrix is one matrix product with the norms added in
    place, and each kernel one scaling and an in-place exponential (the same dense
    matrices, sums and checkpointing; run with denormals flushed)."""
    return _published_formula(
        streams, generator,
        lambda a, b: torch.addmm(b.square().sum(1)[None, :], a, b.t(), alpha=-2).add_(
            a.square().sum(1)[:, None]),
        lambda d, a: (d * (-0.5 / a)).exp_().sum())


SIDES = ("published", "published-ftz", "published-lean", "paper", "default", "exact")
PUBLISHED = SIDES[:3]


def side_loss(side: str):
    """The loss of one benchmark side, as a function of the streams (a fresh instance per
    call, so that every call draws the same permutations)."""
    if side == "published-lean":
        return lambda x: published_lean_loss(x, IndependenceLoss("shuffle", seed=0).generator(0))
    if side.startswith("published"):
        return lambda x: published_loss(x, IndependenceLoss("shuffle", seed=0).generator(0))
    if side == "exact":
        return lambda x: IndependenceLoss("exact")(x)
    return lambda x: IndependenceLoss.from_preset(side, seed=0)(x)


def run_side(side: str, clips: int, out: Path) -> None:
    """One side in this (fresh) process: time and peak memory of forward and backward in
    float32, and the value and gradient saved to ``out`` for the error against float64."""
    streams = streams_like_a_codec(clips)
    if side in ("published-ftz", "published-lean"):  # denormal floats flushed to 0
        torch.set_flush_denormal(True)
    seconds, peak, value, grad = value_and_gradient(side_loss(side), streams)
    save_file({"value": value.reshape(1), "grad": grad.contiguous()}, str(out))
    print(json.dumps({"seconds": seconds, "peak": peak}))


def fresh_side(side: str, clips: int, folder: Path) -> dict:
    """``run_side`` in a new Python process; its figures, value and gradient."""
    out = folder / f"{side}.safetensors"
    done = subprocess.run([sys.executable, __file__, "--clips", str(clips), "--side", side,
                           "--side-out", str(out)], check=True, capture_output=True,
                          text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, **load_file(str(out))}


def floor_seconds(clips: int) -> dict[str, tuple[float, str]]:
    """Seconds that the shuffle estimator's matrix products and exponentials take at this
    machine's measured rates, for two algorithms over the triangle of (x, x) and (y, y) and
    all of (x, y) (each a product of N x N x P once the symmetric halves are counted once):
    ``two-pass`` (the forward pass computes the distances; the backward pass recomputes them
    and applies 4 gradient products: 8 products, one exponential per pair and bandwidth in
    each pass) and ``one-pass`` (what mmdtok runs when the loss's slopes are known: the
    forward pass applies the gradient from its own exponentials: 6 products, one
    exponential per pair and bandwidth). The rates: a 4,096 x 512 x 4,096 product, and
    exponentials over tiles of ``kernels.TILE`` squared values that stay in cache."""
    n, p = clips * (T - K + 1), K * D
    a, b = torch.randn(4096, p), torch.randn(p, 4096)
    tiles = torch.rand(64, kernels.TILE * kernels.TILE) * -60  # exponentials tile by tile,
    out = torch.empty(kernels.TILE * kernels.TILE)  # in cache, as the estimators take them
    matmul = median_seconds(lambda: a @ b, 5, warmup=0)
    exp = median_seconds(lambda: [torch.exp(t, out=out) for t in tiles], 5, warmup=1)
    flop_rate, exp_rate = 2 * 4096 * 4096 * p / matmul, tiles.numel() / exp
    floors = {}
    for name, products, passes in (("two-pass", 8, 2), ("one-pass", 6, 1)):
        flops, exps = products * 2 * n * n * p, passes * 2 * n * n * len(BANDWIDTHS)
        floors[name] = (flops / flop_rate + exps / exp_rate,
                        f"{flops / 1e12:.2f} TFLOP at {flop_rate / 1e9:.0f} GFLOP/s and "
                        f"{exps / 1e9:.2f} G exponentials at {exp_rate / 1e9:.2f} G/s")
    return floors


def fresh_sides(clips: int, repeats: int, streams: torch.Tensor) -> None:
    """Every side in its own fresh process, the sides interleaved ``repeats`` times; the
    speed-up over the published formula per round (median and range), the memory ratio,
    and the float32 errors against the float64 value and gradient of mmdtok's loss."""
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            for side in SIDES:
                runs[side].append(fresh_side(side, clips, Path(folder)))
                print(f"  {side}: {runs[side][-1]['seconds']:.1f} s, "
                      f"{runs[side][-1]['peak'] / 2**20:,.0f} MiB", flush=True)
    floors = floor_seconds(clips)
    truths = {}
    for side in ("paper", "default", "exact"):
        x = streams.double().requires_grad_()
        value = side_loss(side)(x)
        truths[side] = (value.detach(), torch.autograd.grad(value, x)[0])
    for side in PUBLISHED:
        truths[side] = truths["paper"]  # the same formula
    rows = []

    def speed_up(anchor: str, side: str) -> str:
        ratios = [a["seconds"] / r["seconds"] for a, r in zip(runs[anchor], runs[side])]
        return f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})"

    published_peak = min(max(r["peak"] for r in runs[side]) for side in PUBLISHED)
    for side in SIDES:
        peak = max(r["peak"] for r in runs[side])
        value, grad = truths[side]
        last = runs[side][-1]
        value_error = float((last["value"].double()[0] - value).abs() / value.abs())
        grad_error = float((last["grad"].double() - grad).norm() / grad.norm())
        seconds = statistics.median(r["seconds"] for r in runs[side])
        rows.append([f"`{side}`", f"{seconds:.1f} s",
                     *(speed_up(anchor, side) for anchor in PUBLISHED),
                     f"{peak / 2**20:,.0f} MiB", f"1/{published_peak / max(peak, 1):.1f}",
                     *(f"{floors[name][0] / seconds:.0%}" if side in ("paper", "default")
                       else "" for name in ("two-pass", "one-pass")),
                     f"{value_error:.0e}", f"{grad_error:.0e}"])
    for name, (floor, text) in floors.items():
        print(f"{name} floor of the shuffle estimator: {floor:.1f} s ({text})")
    print(markdown_table(["side", "time (median)",
                          f"speed-up over published (median, range of {repeats})",
                          "over published-ftz", "over published-lean", "peak memory",
                          "memory vs the smallest published", "of the two-pass floor",
                          "of the one-pass floor", "float32 value error",
                          "float32 gradient error"], rows))


def formula_check(streams: torch.Tensor, shuffle: IndependenceLoss) -> None:
    """Both sides in float64: values at full size (dense forward without a graph), and
    gradients on the first 64 clips."""
    def rows_of(x):
        return standardize_rows(stream_rows(x, "delay")[0])

    def ours_shuffle(x):
        return IndependenceLoss("shuffle", seed=shuffle.seed)(x)  # fresh: call 0

    def dense_shuffle_at(x):
        rows = rows_of(x)
        return dense_shuffle(rows, kernels.shuffle_rows(rows, [D] * K, shuffle.generator(0)))

    small64 = streams.double()[:64]
    paper = IndependenceLoss.from_preset("paper", seed=shuffle.seed)(small64)
    for name, fn in (("published", published_loss), ("published-lean", published_lean_loss)):
        published = fn(small64, shuffle.generator(0))
        print(f"{name} formula and the paper preset in float64 on 64 clips: value relative "
              f"difference {float((published - paper).abs() / paper.abs()):.1e}", flush=True)
    exact = IndependenceLoss("exact")
    pairs = [("shuffle", ours_shuffle, dense_shuffle_at),
             ("exact", exact, lambda x: dense_exact(rows_of(x)))]
    x64 = streams.double()
    small = x64[:64].clone().requires_grad_()
    for name, ours, dense in pairs:
        with torch.no_grad():
            dense_full = dense(x64)  # minutes at full size: once
            full = float((ours(x64) - dense_full).abs() / dense_full.abs())
        small_ours, small_dense = ours(small), dense(small)
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-formula-check", action="store_true",
                        help="skip the float64 check against dense formulas (minutes)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one fresh side
    parser.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.clips, args.side_out)
        return
    streams = streams_like_a_codec(args.clips)
    num_rows = args.clips * (T - K + 1)
    print(f"{args.clips} clips x {K} codebooks x {D} dims x {T} frames, delay: N = {num_rows} "
          f"rows of {K * D} features; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)

    if not args.no_formula_check:
        formula_check(streams, IndependenceLoss("shuffle", seed=0))
    fresh_sides(args.clips, args.repeats, streams)

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
