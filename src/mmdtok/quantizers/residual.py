"""Residual vector quantization (SoundStream, EnCodec): K stages, each quantizing what the
previous stages left."""

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
from mmdtok.quantizers.latent_norm import LatentNorm


class ResidualVQ(Quantizer):
    """K Euclidean codebooks applied in sequence to the residual.

    Stage k quantizes ``r_k = z - q_0 - ... - q_{k-1}``; the output is ``sum_k q_k``
    with a straight-through gradient to ``z``. Stream k is ``q_k`` with a
    straight-through gradient to ``r_k`` (the form the independence loss was published
    with), taken before codebook dropout.

    Args:
        dim: latent dimension D.
        num_codebooks: number of stages K.
        codebook_size: codes per stage C.
        codebook: how each codebook learns (EMA decay or gradient, k-means
            initialization, dead codes, seed): a
            :class:`~mmdtok.quantizers.codebook.CodebookOptions`.
        codebook_dropout: in training, how many stages each sample keeps: ``None`` (all,
            the default), ``"uniform"`` (1..K equally likely) or K weights for 1..K.
        latent_norm: normalize the latent per channel before the codebooks (batch
            statistics in training, with their gradient; their moving averages at
            inference; see :class:`~mmdtok.quantizers.latent_norm.LatentNorm`).
            ``quantized``, ``decode``, the codebooks and the streams are then in the
            normalized space: the decoder never sees the encoder's offset or scale, so the
            loss does not push them and EMA codebooks do not collapse. Off by default
            (EnCodec's weights expect it off).
    """

    def __init__(self, dim: int = 128, num_codebooks: int = 4, codebook_size: int = 2048, *,
                 codebook: CodebookOptions = CodebookOptions(),
                 codebook_dropout: KeepDistribution = None, latent_norm: bool = False
                 ) -> None:
        super().__init__()
        check_codebooks(num_codebooks, codebook_size, "ResidualVQ")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.codebooks = make_codebooks(num_codebooks, dim, codebook_size, codebook)
        self.set_codebook_dropout(codebook_dropout)
        self.latent_norm = LatentNorm(dim) if latent_norm else None

    def _normalized(self, rows: Tensor) -> Tensor:
        return rows if self.latent_norm is None else self.latent_norm(rows)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        rows = self._normalized(to_rows(z))
        residual = rows
        steps = []
        for codebook in self.codebooks:
            step = codebook.quantize(residual)
            steps.append(step)
            residual = residual - step.code.detach()
        vectors, num_kept = self.drop_codebooks(torch.stack([s.code.detach() for s in steps]),
                                                z.shape[0])  # [K, N, D]
        quantized = rows + (vectors.sum(dim=0) - rows).detach()
        return vq_output(steps, quantized, num_kept, z.shape[0], self.codebook_size)

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        residual = to_rows(z)
        if self.latent_norm is not None:
            residual = self.latent_norm.fixed(residual)
        indices = []
        for codebook in self.codebooks[:n_q]:
            index = codebook.nearest(residual)
            indices.append(index)
            if len(indices) < n_q:
                residual = residual - codebook.lookup(index).to(residual.dtype)
        return stack_codes(indices, z.shape[0])

    def decode_codes(self, codes: Tensor) -> Tensor:
        latent = sum(codebook.lookup(codes[:, k]) for k, codebook in
                     zip(range(codes.shape[1]), self.codebooks))
        return latent.transpose(1, 2)  # [B, T, D] -> [B, D, T]
