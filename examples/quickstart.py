"""Quick start: three quantizers behind one interface, on a latent with structure.

Trains each quantizer briefly (EMA codebooks, k-means init) on a synthetic encoder-like
latent, then prints what a codec author looks at: reconstruction error for each number of
codebooks kept (lower bitrates), codebook usage, and the independence loss of the
per-codebook streams (what a codec adds to its training
loss to make the codebooks independent).

    python examples/quickstart.py
"""

import torch

from mmdtok import FSQ, IndependenceLoss, ProductVQ, ResidualVQ
from mmdtok.patterns import aligned

DIM, BATCH, FRAMES = 32, 8, 250


def latent(seed: int) -> torch.Tensor:
    """[B, D, T]: a smooth trajectory through a mixture of 64 clusters."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(64, DIM, generator=torch.Generator().manual_seed(0))
    which = torch.randint(64, (BATCH, FRAMES), generator=generator)
    rows = means[which] + 0.3 * torch.randn(BATCH, FRAMES, DIM, generator=generator)
    return rows.transpose(1, 2).contiguous()


def main() -> None:
    torch.manual_seed(0)
    quantizers = {
        "ResidualVQ 4 x 256": ResidualVQ(DIM, num_codebooks=4, codebook_size=256,
                                         codebook_dropout="uniform"),
        "ProductVQ 4 x 256": ProductVQ(DIM, num_codebooks=4, codebook_size=256,
                                       codebook_dropout="uniform"),
        "FSQ 4 x (8, 8, 4)": FSQ(DIM, levels=(8, 8, 4), num_codebooks=4,
                                 codebook_dropout="uniform"),
    }
    test = latent(seed=999)
    independence = IndependenceLoss("exact", bandwidths="median")
    for name, quantizer in quantizers.items():
        parameters = list(quantizer.parameters())  # FSQ learns its projections; VQ uses EMA
        optimizer = torch.optim.Adam(parameters, lr=1e-2) if parameters else None
        quantizer.train()
        for step in range(60):
            z = latent(seed=step)
            out = quantizer(z)
            if optimizer is not None:
                optimizer.zero_grad()
                (out.quantized - z).square().mean().backward()
                optimizer.step()
        quantizer.eval()
        codes = quantizer.encode(test)
        errors = [(quantizer.decode(codes[:, :k]) - test).square().mean().item()
                  for k in range(1, quantizer.num_codebooks + 1)]
        out = quantizer(test)
        used = [codes[:, k].unique().numel() / quantizer.codebook_size
                for k in range(quantizer.num_codebooks)]
        print(f"{name}: codes {tuple(codes.shape)}, streams {tuple(out.streams.shape)}, "
              f"delay-aligned streams {tuple(aligned(out.streams, 'delay').shape)}")
        print("  MSE with 1..K codebooks: " + ", ".join(f"{e:.3f}" for e in errors))
        print("  codes used per codebook: " + ", ".join(f"{u:.0%}" for u in used))
        print(f"  independence loss of the streams (exact, median bandwidths): "
              f"{independence(out.streams):.2e}")


if __name__ == "__main__":
    main()
