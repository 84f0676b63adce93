"""Finite scalar quantization (Mentzer et al., 2023) behind the mmdtok interface.

The rounding itself is vector-quantize-pytorch's ``FSQ``; this adapter adds the
projections, per-group streams, hierarchical dropout and the [B, D, T] layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from mmdtok.limits import check_codebooks
from mmdtok.quantizers.base import (
    KeepDistribution,
    Quantizer,
    QuantizerOutput,
    codebook_metrics,
    from_rows,
    stack_streams,
    to_rows,
)


class FSQ(Quantizer):
    """K groups of finite scalar quantizers; group k rounds ``len(levels)`` channels.

    The latent [B, D, T] is projected (1x1, learned) to ``K * len(levels)`` channels,
    each bounded and rounded to its number of levels, then projected back to D. The
    implicit codebook of a group has ``prod(levels)`` codes. Stream k is group k's
    rounded vector [len(levels)] with a straight-through gradient; FSQ has no auxiliary
    loss, so ``losses`` is empty.

    Args:
        dim: latent dimension D.
        levels: levels per channel of a group, each at least 3 (e.g. (8, 5, 5, 5): 1000
            codes).
        num_codebooks: number of groups K.
        codebook_dropout: as in :class:`~mmdtok.quantizers.product.ProductVQ` (default
            off): dropped groups output zeros before the output projection.
    """

    def __init__(self, dim: int = 128, levels: Sequence[int] = (8, 5, 5, 5),
                 num_codebooks: int = 1, *,
                 codebook_dropout: KeepDistribution = None) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 3:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 3, "
                             f"got {levels}")
        check_codebooks(num_codebooks, math.prod(levels), f"FSQ with levels {levels}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.num_codebooks, self.levels = dim, num_codebooks, tuple(levels)
        self.codebook_size = math.prod(levels)
        inner = num_codebooks * len(levels)
        self.project_in = nn.Linear(dim, inner) if inner != dim else nn.Identity()
        self.project_out = nn.Linear(inner, dim) if inner != dim else nn.Identity()
        # imported here: vector-quantize-pytorch imports torch._dynamo (through einx),
        # seconds that every ``import mmdtok`` and every CLI command would pay
        from vector_quantize_pytorch import FSQ as _VqpFSQ

        self.fsq = _VqpFSQ(levels=levels, dim=inner, num_codebooks=num_codebooks,
                           keep_num_codebooks_dim=True)
        self.set_codebook_dropout(codebook_dropout)

    def _round(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of the rounded groups [K, N, L] and their indices [K, N] int64."""
        rounded, indices = self.fsq(self.project_in(to_rows(z))[None])  # [1, N, K*L], [1, N, K]
        groups = rounded[0].view(-1, self.num_codebooks, len(self.levels)).transpose(0, 1)
        return groups, indices[0].t().long()

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        batch, frames = z.shape[0], z.shape[-1]
        groups, indices = self._round(z)
        kept, num_kept = self.drop_codebooks(groups, batch)
        quantized = self.project_out(kept.transpose(0, 1).reshape(kept.shape[1], -1))
        codes = indices.view(self.num_codebooks, batch, frames).transpose(0, 1)
        return QuantizerOutput(
            quantized=from_rows(quantized, batch),
            codes=codes,
            streams=stack_streams(groups, batch),
            metrics=codebook_metrics(codes, self.codebook_size),
            num_kept=num_kept,
        )

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        _, indices = self._round(z)
        return indices.view(self.num_codebooks, z.shape[0], -1).transpose(0, 1)[:, :n_q]

    def decode_codes(self, codes: Tensor) -> Tensor:
        batch, kept, frames = codes.shape
        full = codes.new_zeros(batch, self.num_codebooks, frames)
        full[:, :kept] = codes
        # vector-quantize-pytorch maps [B, T, K] indices to [B, T, K * L] rounded values.
        values = self.fsq.indices_to_codes(full.transpose(1, 2))
        values = values.view(batch, frames, self.num_codebooks, len(self.levels))
        values[:, :, kept:] = 0.0
        return self.project_out(values.reshape(batch, frames, -1)).transpose(1, 2)
