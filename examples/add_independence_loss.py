"""Add mmdtok's independence loss to a codec built on vector-quantize-pytorch.

A toy codec (1x1 convolutions around a 2-stage ResidualVQ of 8 codes from
vector-quantize-pytorch) compresses frames that are the sum of two independent
categorical factors, ``A[s1] + B[s2]``. Trained for reconstruction alone, the residual
quantizer mixes the factors and its two codebooks depend on each other; with the
independence loss the encoder is pushed towards codebooks that vary independently. The
script trains both and prints the dependence of the codes (the paper's normalized pairwise
form, 0 = independent, 0.5 = copied) and the reconstruction error as training goes on.

A few lines connect the loss to the other library's quantizer: its per-stage code vectors
(``return_all_codes``) become streams with a straight-through gradient to the encoder,
and ``weight * loss(streams)`` joins the training loss. For a large codec, where one batch
holds too few rows, ``mmdtok.MacroBatchIndependence`` applies the loss every M steps on
the accumulated inputs instead.

    python examples/add_independence_loss.py [--steps 600]
"""

import argparse

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from mmdtok import IndependenceLoss
from mmdtok.losses import straight_through_streams
from mmdtok.metrics import normalized_pairwise_dependence

CHANNELS, LATENT, STAGES, CODES, BATCH, FRAMES = 8, 8, 2, 8, 16, 48
FACTOR_A = torch.randn(8, CHANNELS, generator=torch.Generator().manual_seed(0))
FACTOR_B = torch.randn(8, CHANNELS, generator=torch.Generator().manual_seed(1))


def toy_audio(generator: torch.Generator, batch: int = BATCH) -> torch.Tensor:
    """[B, C, T]: every frame is A[s1] + B[s2] + noise, s1 and s2 independent."""
    s1 = torch.randint(8, (batch, FRAMES), generator=generator)
    s2 = torch.randint(8, (batch, FRAMES), generator=generator)
    noise = 0.05 * torch.randn(batch, FRAMES, CHANNELS, generator=generator)
    return (FACTOR_A[s1] + FACTOR_B[s2] + noise).transpose(1, 2)


def train(weight: float, steps: int) -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv1d(CHANNELS, 64, 1), nn.ELU(), nn.Conv1d(64, LATENT, 1))
    decoder = nn.Sequential(nn.Conv1d(LATENT, 64, 1), nn.ELU(), nn.Conv1d(64, CHANNELS, 1))
    quantizer = ResidualVQ(dim=LATENT, num_quantizers=STAGES, codebook_size=CODES,
                           kmeans_init=True, decay=0.9, threshold_ema_dead_code=1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=2e-3)

    independence = IndependenceLoss("exact", pattern="parallel", bandwidths="median")
    data, test = torch.Generator().manual_seed(5), toy_audio(torch.Generator().manual_seed(9), 64)
    label = f"independence weight {weight:g}"
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
        if step % (steps // 4) == 0:
            report(label, step, encoder, decoder, quantizer, test)


@torch.no_grad()
def report(label, step, encoder, decoder, quantizer, test) -> None:
    quantizer.eval()
    quantized, indices, _ = quantizer(encoder(test).transpose(1, 2))
    quantizer.train()
    dependence = normalized_pairwise_dependence(indices.transpose(1, 2), CODES, "parallel")
    error = (decoder(quantized.transpose(1, 2)) - test).square().mean()
    print(f"{label:>26}  step {step:4d}  code dependence {dependence:.4f}  "
          f"reconstruction MSE {error:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--weight", type=float, default=10.0)
    args = parser.parse_args()
    for weight in ((0.0, args.weight) if args.weight else (0.0,)):
        train(weight, args.steps)


if __name__ == "__main__":
    main()
