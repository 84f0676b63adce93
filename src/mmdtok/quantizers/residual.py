"""Residual vector quantization (SoundStream, EnCodec): K stages, each quantizing what the
previous stages left."""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.quantizers.base import (
    KeepDistribution,
    Quantizer,
    QuantizerOutput,
    stack_codes,
    to_rows,
)
from mmdtok.quantizers.codebook import DeadCodeUnit, make_codebooks, vq_output
from mmdtok.quantizers.standardize import RunningStandardizer


class ResidualVQ(Quantizer):
    """K Euclidean codebooks applied in sequence to the residual.

    Stage k quantizes ``r_k = z - q_0 - ... - q_{k-1}``; the output is ``sum_k q_k``
    with a straight-through gradient to ``z``. Stream k is ``q_k`` with a
    straight-through gradient to ``r_k`` (the form the independence loss was published
    with), taken before quantizer dropout.

    Args:
        dim: latent dimension D.
        num_codebooks: number of stages K.
        codebook_size: codes per stage C.
        decay: EMA decay of the codebook statistics; ``None`` learns the codebooks by
            gradient (then ``losses["codebook"]`` is returned).
        kmeans_iters: Lloyd iterations of the initialization on the first batch
            (0: random rows of that batch).
        dead_code_threshold, dead_code_unit: when a code is replaced by a batch row; see
            :class:`~mmdtok.quantizers.codebook.EuclideanCodebook` ("share": a fraction
            of the uniform share of the batch; "count": an absolute EMA count).
        quantizer_dropout: in training, how many stages each sample keeps: ``None``
            (all), ``"uniform"`` (1..K equally likely) or K weights for 1..K.
        standardize: quantize the latent standardized per channel (batch statistics in
            training, with their gradient; their moving averages at inference; see
            :class:`~mmdtok.quantizers.standardize.RunningStandardizer`). ``quantized``,
            ``decode``, the codebooks and the streams are then in the standardized
            space: the decoder never sees the encoder's offset or scale, so the loss does
            not push them and EMA codebooks do not collapse. Off by default (EnCodec's
            weights expect it off).
        seed: seeds the codebooks' random draws (identical on every rank).
    """

    def __init__(self, dim: int = 128, num_codebooks: int = 4, codebook_size: int = 2048, *,
                 decay: float | None = 0.99, kmeans_iters: int = 50,
                 dead_code_threshold: float = 0.1, dead_code_unit: DeadCodeUnit = "share",
                 quantizer_dropout: KeepDistribution = None, standardize: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.codebooks = make_codebooks(num_codebooks, dim, codebook_size, decay=decay,
                                        kmeans_iters=kmeans_iters,
                                        dead_code_threshold=dead_code_threshold,
                                        dead_code_unit=dead_code_unit, seed=seed)
        self.set_codebook_dropout(quantizer_dropout)
        self.standardizer = RunningStandardizer(dim) if standardize else None

    def _standardized(self, rows: Tensor) -> Tensor:
        return rows if self.standardizer is None else self.standardizer(rows)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        rows = self._standardized(to_rows(z))
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

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        self.check_latent(z)
        n_q = self.resolve_n_q(n_q)
        residual = to_rows(z)
        if self.standardizer is not None:
            residual = self.standardizer.fixed(residual)
        indices = []
        for codebook in self.codebooks[:n_q]:
            index = codebook.nearest(residual)
            indices.append(index)
            if len(indices) < n_q:
                residual = residual - codebook.lookup(index).to(residual.dtype)
        return stack_codes(indices, z.shape[0])

    def decode(self, codes: Tensor) -> Tensor:
        self.check_codes(codes)
        codes = codes.long()
        latent = sum(codebook.lookup(codes[:, k]) for k, codebook in
                     zip(range(codes.shape[1]), self.codebooks))
        return latent.transpose(1, 2)  # [B, T, D] -> [B, D, T]
