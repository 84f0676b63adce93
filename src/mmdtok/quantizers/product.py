"""Product vector quantization with hierarchical dropout: the latent is cut into K groups
of channels, each quantized by its own codebook."""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.limits import check_codebooks
from mmdtok.quantizers.base import (
    KeepDistribution,
    Quantizer,
    QuantizerOutput,
    stack_codes,
    to_rows,
)
from mmdtok.quantizers.codebook import CodebookOptions, make_codebooks, vq_output


class ProductVQ(Quantizer):
    """K codebooks over K disjoint channel groups of the latent (D / K channels each).

    Group k is channels ``k * D/K .. (k + 1) * D/K - 1``. With ``codebook_dropout``
    each training sample keeps only its first k groups for a random k and the other groups
    output zeros, so earlier codebooks learn to carry the most information and a prefix of
    the codes decodes (missing groups as zeros) to a valid lower-bitrate latent.

    Stream k is group k's code vector [D/K] with a straight-through gradient to the
    latent, taken before dropout.

    Args:
        dim: latent dimension D, a multiple of ``num_codebooks``.
        num_codebooks: number of groups K.
        codebook_size: codes per group C.
        codebook: how each codebook learns, as in
            :class:`~mmdtok.quantizers.residual.ResidualVQ`.
        codebook_dropout: in training, how many groups each sample keeps: ``None`` (all,
            the default), ``"uniform"`` (1..K equally likely: hierarchical dropout) or K
            weights for 1..K.
    """

    def __init__(self, dim: int = 128, num_codebooks: int = 4, codebook_size: int = 2048, *,
                 codebook: CodebookOptions = CodebookOptions(),
                 codebook_dropout: KeepDistribution = None) -> None:
        super().__init__()
        check_codebooks(num_codebooks, codebook_size, "ProductVQ")
        if dim % num_codebooks:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_codebooks "
                             f"({num_codebooks})")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.group_dim = dim // num_codebooks
        self.codebooks = make_codebooks(num_codebooks, self.group_dim, codebook_size, codebook)
        self.set_codebook_dropout(codebook_dropout)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        groups = to_rows(z).split(self.group_dim, dim=1)
        steps = [codebook.quantize(group) for codebook, group in zip(self.codebooks, groups)]
        kept, num_kept = self.drop_codebooks(torch.stack([step.stream for step in steps]),
                                             z.shape[0])  # [K, N, D/K]
        quantized = kept.permute(1, 0, 2).reshape(-1, self.dim)  # groups side by side
        return vq_output(steps, quantized, num_kept, z.shape[0], self.codebook_size)

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        groups = to_rows(z).split(self.group_dim, dim=1)[:n_q]
        return stack_codes([codebook.nearest(group) for codebook, group in
                            zip(self.codebooks, groups)], z.shape[0])

    def decode_codes(self, codes: Tensor) -> Tensor:
        batch, kept, frames = codes.shape
        parts = [codebook.lookup(codes[:, k]) for k, codebook in
                 zip(range(kept), self.codebooks)]  # [B, T, D/K] each
        missing = self.num_codebooks - kept
        if missing:
            parts.append(parts[0].new_zeros(batch, frames, missing * self.group_dim))
        return torch.cat(parts, dim=-1).transpose(1, 2)
