"""DAC's residual VQ with factorized, L2-normalized codes (Improved VQGAN's two tricks).

Stage k projects the residual ``r_k`` [B, D, T] to a few dimensions (``in_proj``, a 1x1
convolution D -> d), picks the code whose direction is closest (cosine similarity: the
projected latent and the codebook are L2-normalized for the lookup), and maps the picked
code (not normalized) back with ``out_proj`` (d -> D); ``r_{k+1} = r_k - out_proj(q_k)``.
The module and parameter names are those of ``transformers``' DacResidualVectorQuantizer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.limits import check_codebooks
from mmdtok.quantizers.base import (
    KeepDistribution,
    Quantizer,
    QuantizerOutput,
    codebook_metrics,
    keep_mask,
    sample_num_kept,
)


class FactorizedStage(nn.Module):
    """One stage: ``in_proj`` (D -> d), a codebook [C, d] searched by cosine similarity,
    ``out_proj`` (d -> D); both projections with weight norm."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        weight_norm = nn.utils.parametrizations.weight_norm
        self.in_proj = weight_norm(nn.Conv1d(dim, codebook_dim, 1))
        self.out_proj = weight_norm(nn.Conv1d(codebook_dim, dim, 1))
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, projected: Tensor) -> Tensor:
        """Codes [B, T] of projected latents [B, d, T]: the largest cosine similarity."""
        rows = F.normalize(projected.transpose(1, 2), dim=-1)  # [B, T, d]
        codebook = F.normalize(self.codebook.weight, dim=-1).to(rows.dtype)
        # DAC's expression of the (negated) squared distance, so that near ties break
        # as in the published model
        scores = -(rows.pow(2).sum(-1, keepdim=True) - 2 * rows @ codebook.t()) \
            + codebook.pow(2).sum(-1)
        return scores.argmax(dim=-1)

    def lookup(self, codes: Tensor) -> Tensor:
        """The projected-back vectors [B, D, T] of codes [B, T]."""
        return self.out_proj(self.codebook(codes).transpose(1, 2))


class FactorizedRVQ(Quantizer):
    """K factorized stages on the residual (DAC's quantizer).

    Training: the output is ``sum_k out_proj(q_k)`` with a straight-through gradient
    through each stage's projection; ``losses`` holds DAC's ``commitment`` (the projected
    latent to its code) and ``codebook`` (the code to the projected latent) MSEs, and the
    codebooks learn by gradient. Stream k is the stage's code in the d-dimensional
    codebook space, with a straight-through gradient to ``in_proj(r_k)``.

    Args:
        dim: latent dimension D. num_codebooks: stages K. codebook_size: codes per stage.
        codebook_dim: the dimension d of the lookups (8 in the published models).
        codebook_dropout: in training, how many stages each sample keeps: ``None`` (all,
            the default), ``"uniform"`` or K weights for 1..K.
    """

    def __init__(self, dim: int = 1024, num_codebooks: int = 9, codebook_size: int = 1024,
                 codebook_dim: int = 8, *, codebook_dropout: KeepDistribution = None) -> None:
        super().__init__()
        check_codebooks(num_codebooks, codebook_size, "FactorizedRVQ")
        if isinstance(codebook_dim, bool) or not isinstance(codebook_dim, int) or not (
                1 <= codebook_dim <= dim):
            raise ValueError(f"FactorizedRVQ: codebook_dim must be an integer in 1..{dim}, "
                             f"got {codebook_dim!r}")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, codebook_size
        self.codebook_dim = codebook_dim
        self.quantizers = nn.ModuleList(FactorizedStage(dim, codebook_size, codebook_dim)
                                        for _ in range(num_codebooks))
        self.set_codebook_dropout(codebook_dropout)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        batch = z.shape[0]
        keep_probs = getattr(self, "keep_probs", None) if self.training else None
        num_kept = sample_num_kept(keep_probs, batch, self.num_codebooks, z.device)
        kept = keep_mask(num_kept, self.num_codebooks).to(z.dtype)  # [B, K]
        residual, quantized = z, torch.zeros_like(z)
        codes, streams, commitment, codebook_loss = [], [], [], []
        for k, stage in enumerate(self.quantizers):
            projected = stage.in_proj(residual)
            index = stage.nearest(projected.detach())
            code = stage.codebook(index).transpose(1, 2)  # [B, d, T]
            commitment.append((F.mse_loss(projected, code.detach(), reduction="none")
                               .mean(dim=(1, 2)) * kept[:, k]).mean())
            codebook_loss.append((F.mse_loss(code, projected.detach(), reduction="none")
                                  .mean(dim=(1, 2)) * kept[:, k]).mean())
            straight = projected + (code - projected).detach()
            out = stage.out_proj(straight)
            quantized = quantized + out * kept[:, k, None, None]
            residual = residual - out
            codes.append(index)
            streams.append(straight)
        codes_t = torch.stack(codes, dim=1)
        return QuantizerOutput(
            quantized=quantized, codes=codes_t, streams=torch.stack(streams, dim=1),
            losses={"commitment": torch.stack(commitment).sum(),
                    "codebook": torch.stack(codebook_loss).sum()},
            metrics=codebook_metrics(codes_t, self.codebook_size), num_kept=num_kept)

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        residual, codes = z, []
        for stage in self.quantizers[:n_q]:
            index = stage.nearest(stage.in_proj(residual))
            codes.append(index)
            if len(codes) < n_q:
                residual = residual - stage.lookup(index)
        return torch.stack(codes, dim=1)

    def decode_codes(self, codes: Tensor) -> Tensor:
        return sum(stage.lookup(codes[:, k]) for k, stage in
                   zip(range(codes.shape[1]), self.quantizers))
