"""The latent norm: latent rows normalized per channel before quantization (a batch norm
without affine parameters, synchronized over ranks), ``ResidualVQ(latent_norm=True)``.

A fresh encoder's output drifts: to make the decoder louder, the mel loss pushes the
latent's offset up faster than EMA codebooks can follow, every row lands on one code, the
gradient through the straight-through estimator stops carrying information and the
drift goes on (measured on the small-music codec: the latent mean went from norm 0.4 to
7 in 30 steps while the rows spread by 0.05; codebook 0 fell to one code by step 5 and
stayed there whatever the dead-code settings). Normalizing with the batch's statistics,
with the gradient through them, makes the loss blind to the latent's per-channel offset
and scale, so nothing pushes them; the codebooks and the decoder work in the
normalized space. Inference uses the statistics' moving averages, fixed, so encoding
stays frame-by-frame exact (streaming, batching).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmdtok.distributed import synced_sum, world_size


class LatentNorm(nn.Module):
    """``(rows - mean) / std`` per channel of rows [N, D].

    In training: the statistics of this batch over all ranks, differentiable (as in a
    synchronized batch norm), and their moving averages are updated. In inference: the
    moving averages.

    Args:
        dim: channels D.
        momentum: weight of each training batch in the moving averages.
        eps: added to the variance.
    """

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def batch_stats(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (biased) variance per channel over the rows of every rank. The sums
        are taken around a shift (the first row, the same on every rank after a sum), so
        a large common offset does not cancel the variance in float32."""
        shift = synced_sum(rows[:1].detach()) / world_size()
        centred = rows - shift
        count = synced_sum(rows.new_full((1,), rows.shape[0]))
        sums = synced_sum(torch.cat([centred.sum(dim=0), centred.pow(2).sum(dim=0)]))
        dim = rows.shape[1]
        mean_c = sums[:dim] / count
        var = (sums[dim:] / count - mean_c.pow(2)).clamp(min=0)
        return mean_c + shift[0], var

    @torch.no_grad()
    def _update(self, mean: Tensor, var: Tensor) -> None:
        """Moving averages; statistics that are not finite (a diverging batch, the same on
        every rank) are not taken in."""
        if not bool(torch.isfinite(torch.cat([mean, var])).all()):
            return
        if not bool(self.initialized):
            self.mean.copy_(mean)
            self.var.copy_(var)
            self.initialized.fill_(True)
        else:
            self.mean.lerp_(mean.to(self.mean.dtype), self.momentum)
            self.var.lerp_(var.to(self.var.dtype), self.momentum)

    def forward(self, rows: Tensor) -> Tensor:
        if not self.training:
            return self.fixed(rows)
        mean, var = self.batch_stats(rows)
        self._update(mean.detach(), var.detach())
        return (rows - mean) / (var + self.eps).sqrt()

    def fixed(self, rows: Tensor) -> Tensor:
        """Normalized with the moving averages, in any mode (for encoding)."""
        return (rows - self.mean.to(rows.dtype)) / (self.var.to(rows.dtype) + self.eps).sqrt()

    def extra_repr(self) -> str:
        return f"{self.mean.shape[0]}, momentum={self.momentum}"

