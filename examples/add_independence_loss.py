"""Add mmdtok's independence loss to a codec built on vector-quantize-pytorch.

A toy codec (1x1 convolutions around a 2-stage ResidualVQ of 8 codes from
vector-quantize-pytorch) compresses frames that are the sum of two independent
categorical factors, ``A[s1] + B[s2]``. Trained for reconstruction alone, the residual
quantizer mixes the factors and its two codebooks depend on each other; with the
independence loss the encoder is pushed towards codebooks that vary independently. The
script trains both arms for each seed (the seed sets the initialization and the training
batches; the test frames are the same for all) and prints, on the test frames, the
dependence of the codes (the paper's normalized pairwise form, 0 = independent, 0.5 =
copied), the dependence of the code vectors as the loss measures it (exact MMD, median
bandwidths) and the reconstruction error, then their mean and standard deviation over the
seeds and the paired differences.

The toy is noisy: the dependence of one run moves by +-0.02 from one evaluation to the
next as the codebooks' EMA updates move codes between clusters, so one seed can show
either order. Read the mean over seeds and the paired differences (the README has them
and what they do and do not show).

A few lines connect the loss to the other library's quantizer: its per-stage code vectors
(``return_all_codes``) become streams with a straight-through gradient to the encoder,
and ``weight * loss(streams)`` joins the training loss. For a large codec, where one batch
holds too few rows, ``mmdtok.MacroBatchIndependence`` applies the loss every M steps on
the accumulated inputs instead.

    python examples/add_independence_loss.py [--steps 600] [--seeds 0 1 2 3 4]
        [--rotation-trick]
"""

from __future__ import annotations

import argparse
import inspect
import statistics

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

from mmdtok import IndependenceLoss
from mmdtok.losses import straight_through_streams
from mmdtok.metrics import normalized_pairwise_dependence

CHANNELS, LATENT, STAGES, CODES, BATCH, FRAMES = 8, 8, 2, 8, 16, 48
FACTOR_A = torch.randn(8, CHANNELS, generator=torch.Generator().manual_seed(0))
FACTOR_B = torch.randn(8, CHANNELS, generator=torch.Generator().manual_seed(1))
# Every setting of the other library's quantizer that the result depends on, passed
# explicitly so that a change of its defaults between versions cannot change the toy.
# The reconstruction gradient reaches the encoder by plain straight-through estimation,
# as in EnCodec and as the independence loss's streams assume, or, with --rotation-trick,
# by the rotation trick (the library's default since 1.20).
# A code is replaced once its running count falls under one row per batch: the setting
# is an absolute count before vector-quantize-pytorch 1.34 and a fraction of the mean
# count (BATCH * FRAMES / CODES rows) from then on.
QUANTIZER = {"kmeans_init": True, "kmeans_iters": 10, "decay": 0.9,
             "commitment_weight": 1.0, "use_cosine_sim": False}
if "dead_code_threshold_ratio" in inspect.signature(VectorQuantize.__init__).parameters:
    QUANTIZER["dead_code_threshold_ratio"] = CODES / (BATCH * FRAMES)
else:
    QUANTIZER["threshold_ema_dead_code"] = 1


def toy_audio(generator: torch.Generator, batch: int = BATCH) -> torch.Tensor:
    """[B, C, T]: every frame is A[s1] + B[s2] + noise, s1 and s2 independent."""
    s1 = torch.randint(8, (batch, FRAMES), generator=generator)
    s2 = torch.randint(8, (batch, FRAMES), generator=generator)
    noise = 0.05 * torch.randn(batch, FRAMES, CHANNELS, generator=generator)
    return (FACTOR_A[s1] + FACTOR_B[s2] + noise).transpose(1, 2)


def train(weight: float, steps: int, seed: int, rotation_trick: bool = False,
          verbose: bool = True) -> tuple[float, float, float]:
    """One arm for one seed; returns (code dependence, stream dependence, reconstruction
    MSE) on the test frames at the end."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv1d(CHANNELS, 64, 1), nn.ELU(), nn.Conv1d(64, LATENT, 1))
    decoder = nn.Sequential(nn.Conv1d(LATENT, 64, 1), nn.ELU(), nn.Conv1d(64, CHANNELS, 1))
    quantizer = ResidualVQ(dim=LATENT, num_quantizers=STAGES, codebook_size=CODES,
                           rotation_trick=rotation_trick, **QUANTIZER)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=2e-3)

    independence = IndependenceLoss("exact", pattern="parallel", bandwidths="median")
    data = torch.Generator().manual_seed(1000 + seed)
    test = toy_audio(torch.Generator().manual_seed(9), 64)
    label = f"seed {seed}, weight {weight:g}"
    for step in range(steps + 1):
        audio = toy_audio(data)
        z = encoder(audio)
        quantized, _, commitment, all_codes = quantizer(z.transpose(1, 2), return_all_codes=True)
        loss = (decoder(quantized.transpose(1, 2)) - audio).square().mean() + commitment.sum()
        if weight:
            streams = straight_through_streams(z, all_codes.transpose(2, 3))  # [B, K, D, T]
            loss = loss + weight * independence(streams)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if verbose and step % max(1, steps // 4) == 0 and step < steps:
            print(report(label, step, *evaluate(encoder, decoder, quantizer, test)), flush=True)
    result = evaluate(encoder, decoder, quantizer, test)
    if verbose:
        print(report(label, steps, *result), flush=True)
    return result


@torch.no_grad()
def evaluate(encoder, decoder, quantizer, test) -> tuple[float, float, float]:
    """(code dependence, stream dependence, reconstruction MSE) on the test frames."""
    quantizer.eval()
    z = encoder(test)
    quantized, indices, _, all_codes = quantizer(z.transpose(1, 2), return_all_codes=True)
    quantizer.train()
    dependence = normalized_pairwise_dependence(indices.transpose(1, 2), CODES, "parallel")
    streams = straight_through_streams(z, all_codes.transpose(2, 3))
    error = (decoder(quantized.transpose(1, 2)) - test).square().mean()
    # The loss's own estimator (exact MMD, median bandwidths), fresh so that every
    # evaluation draws the same random numbers.
    measure = IndependenceLoss("exact", pattern="parallel", bandwidths="median", seed=0)
    return float(dependence), float(measure(streams)), float(error)


def report(label: str, step: int, dependence: float, streams: float, error: float) -> str:
    return (f"{label:>22}  step {step:4d}  code dependence {dependence:.4f}  "
            f"stream dependence {streams:.2e}  reconstruction MSE {error:.4f}")


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def compare(steps: int, seeds: list[int], weight: float, rotation_trick: bool = False,
            verbose: bool = True) -> dict[float, list[tuple[float, float, float]]]:
    """Both arms for every seed: {weight: [train's triple per seed]}."""
    return {w: [train(w, steps, seed, rotation_trick, verbose) for seed in seeds]
            for w in (0.0, weight)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--weight", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rotation-trick", action="store_true",
                        help="the rotation trick for the reconstruction gradient instead "
                             "of plain straight-through")
    args = parser.parse_args()
    if args.weight <= 0 or args.steps < 1:
        parser.error("--weight must be > 0 and --steps >= 1")
    results = compare(args.steps, args.seeds, args.weight, args.rotation_trick)
    print(f"\nat step {args.steps}, over seeds {args.seeds} (mean +- standard deviation):")
    for w, rows in results.items():
        print(f"  weight {w:>4g}: code dependence {spread([r[0] for r in rows])}, stream "
              f"dependence {spread([r[1] for r in rows])}, reconstruction MSE "
              f"{spread([r[2] for r in rows])}")
    for i, name in enumerate(("code dependence", "stream dependence")):
        pairs = list(zip(results[0.0], results[args.weight]))
        lower = sum(b[i] < a[i] for a, b in pairs)
        print(f"  {name}, paired difference (with - without): "
              f"{spread([b[i] - a[i] for a, b in pairs])}; lower with the loss in {lower} "
              f"of {len(pairs)} seeds")


if __name__ == "__main__":
    main()
