"""Synthetic latents with known structure: mixtures of many Gaussians."""

import torch


def gaussian_mixture(num_rows: int, dim: int, num_clusters: int, *, spread: float = 0.05,
                     seed: int = 0) -> torch.Tensor:
    """Rows [N, D] drawn around ``num_clusters`` fixed random means (fixed by ``seed``)."""
    means = torch.randn(num_clusters, dim, generator=torch.Generator().manual_seed(seed))
    which = torch.randint(num_clusters, (num_rows,))
    return means[which] + spread * torch.randn(num_rows, dim)


def as_latent(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * T, D] -> [B, D, T]."""
    return rows.view(batch, -1, rows.shape[1]).transpose(1, 2).contiguous()
