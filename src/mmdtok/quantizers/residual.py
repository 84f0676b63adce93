"""Residual vector quantization (SoundStream, EnCodec): K stages, each quantizing what the
previous stages left."""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.quantizers.base import (
    KeepDistribution,
    Quantizer,
    QuantizerOutput,
    check_keep_distribution,
    codebook_metrics,
    from_rows,
    rows_keep_mask,
    sample_num_kept,
    stack_codes,
    stack_streams,
    to_rows,
)
from mmdtok.quantizers.codebook import DeadCodeUnit, make_codebooks


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
        seed: seeds the codebooks' random draws (identical on every rank).
    """

    def __init__(self, dim: int = 128, num_codebooks: int = 4, codebook_size: int = 2048, *,
                 decay: float | None = 0.99, kmeans_iters: int = 50,
                 dead_code_threshold: float = 0.1, dead_code_unit: DeadCodeUnit = "share",
                 quantizer_dropout: KeepDistribution = None, seed: int = 0) -> None:
        super().__init__()
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.codebooks = make_codebooks(num_codebooks, dim, codebook_size, decay=decay,
                                        kmeans_iters=kmeans_iters,
                                        dead_code_threshold=dead_code_threshold,
                                        dead_code_unit=dead_code_unit, seed=seed)
        self.register_buffer("keep_probs", check_keep_distribution(quantizer_dropout,
                                                                   num_codebooks),
                             persistent=False)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        batch, frames = z.shape[0], z.shape[-1]
        rows = to_rows(z)
        residual = rows
        steps = []
        for codebook in self.codebooks:
            step = codebook.quantize(residual)
            steps.append(step)
            residual = residual - step.code.detach()

        num_kept = sample_num_kept(self.keep_probs if self.training else None, batch,
                                   self.num_codebooks, z.device)
        codes_sum = torch.stack([step.code.detach() for step in steps])  # [K, N, D]
        if self.training and self.keep_probs is not None:
            codes_sum = codes_sum * rows_keep_mask(num_kept, self.num_codebooks, frames)
        quantized = rows + (codes_sum.sum(dim=0) - rows).detach()

        losses = {"commitment": torch.stack([step.commitment for step in steps]).mean()}
        if steps[0].codebook_loss is not None:
            losses["codebook"] = torch.stack([step.codebook_loss for step in steps]).mean()
        codes = stack_codes([step.index for step in steps], batch)
        return QuantizerOutput(
            quantized=from_rows(quantized, batch),
            codes=codes,
            streams=stack_streams(torch.stack([step.stream for step in steps]), batch),
            losses=losses,
            metrics=codebook_metrics(codes, self.codebook_size,
                                     [step.dead_fraction for step in steps]),
            num_kept=num_kept,
        )

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        self.check_latent(z)
        n_q = self.resolve_n_q(n_q)
        residual = to_rows(z)
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
