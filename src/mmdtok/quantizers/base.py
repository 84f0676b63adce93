"""The quantizer interface every codec part in mmdtok speaks.

Shapes: latent ``z`` [B, D, T]; codes [B, K, T] int64; per-codebook streams
[B, K, D_k, T].
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

KeepDistribution = Literal["uniform"] | Sequence[float] | None


@dataclass(frozen=True)
class QuantizerOutput:
    """What a quantizer's forward returns.

    quantized: [B, D, T], with a straight-through gradient to the input; in training it
        reflects codebook dropout (dropped codebooks contribute nothing).
    codes: [B, K, T] int64, every codebook (before dropout).
    streams: [B, K, D_k, T], the vector each codebook contributes, before any dropout,
        with a gradient that reaches the input: what ``IndependenceLoss`` takes.
    losses: named scalars for the trainer to weight (e.g. "commitment", "codebook").
    metrics: named scalars for logging (e.g. "perplexity_0", "dead_codes_0").
    num_kept: [B] int64, how many codebooks each sample kept (K outside training).
    """

    quantized: Tensor
    codes: Tensor
    streams: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)
    num_kept: Tensor | None = None


class Quantizer(nn.Module, ABC):
    """A module mapping a latent [B, D, T] to K parallel code streams and back.

    Subclasses set ``dim``, ``num_codebooks`` and ``codebook_size`` and implement
    ``forward``, ``encode_latent`` and ``decode_codes``; ``encode`` and ``decode`` check
    their input once and call them. ``decode`` accepts any prefix of the K codebooks (a
    lower bitrate). Every quantizer names its codebook dropout ``codebook_dropout``, off
    (``None``) unless asked for.
    """

    dim: int
    num_codebooks: int
    codebook_size: int
    continuous = False  # True for a bottleneck without codes (VAEBottleneck)

    @property
    def input_dim(self) -> int:
        """Channels of the input latent (``dim``; a VAE takes a mean and a scale each)."""
        return self.dim

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` [B, D, T]; updates codebook statistics in training."""

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """Codes [B, n_q, T] int64 of ``z`` [B, D, T] (all K codebooks by default); the
        latent is checked (shape, dtype, finite values) once, here."""
        self.check_latent(z, finite=True)
        return self.encode_latent(z, self.resolve_n_q(n_q))

    def decode(self, codes: Tensor) -> Tensor:
        """Latent [B, D, T] from codes [B, k, T] for any k in 1..K; the codes are checked
        (shape, integer type, range) and converted to int64 once, here."""
        return self.decode_codes(self.checked_codes(codes))

    @abstractmethod
    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        """:meth:`encode` without the checks: ``z`` is a valid latent, ``1 <= n_q <= K``.
        For callers that checked their input once for many calls (chunked encoding)."""

    @abstractmethod
    def decode_codes(self, codes: Tensor) -> Tensor:
        """:meth:`decode` without the checks: ``codes`` is int64 [B, k, T], in range."""

    def check_latent(self, z: Tensor, finite: bool = False) -> None:
        """Raise TypeError or ValueError naming what is wrong with a latent input;
        ``finite`` also refuses NaN and infinite values (a pass over the data: done where
        inference starts, not on every training forward)."""
        if not isinstance(z, Tensor):
            raise TypeError(f"expected a torch.Tensor latent [B, D, T], got {type(z).__name__}")
        if z.ndim != 3:
            raise ValueError(f"expected a latent of rank 3 [B, D={self.input_dim}, T], got "
                             f"rank {z.ndim} with shape {tuple(z.shape)}")
        if z.shape[1] != self.input_dim:
            raise ValueError(f"expected latent dimension D={self.input_dim} on axis 1 of "
                             f"[B, D, T], got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise ValueError(f"expected a floating-point latent, got dtype {z.dtype}")
        if finite and z.numel() and not bool(torch.isfinite(z).all()):
            raise ValueError("the latent contains NaN or infinite values")

    def checked_codes(self, codes: Tensor) -> Tensor:
        """``codes`` as int64 after checking them; TypeError or ValueError naming what is
        wrong (not a tensor, not [B, k, T] with 1 <= k <= K, not integers, out of range)."""
        if not isinstance(codes, Tensor):
            raise TypeError(f"expected a torch.Tensor of codes [B, K, T], "
                             f"got {type(codes).__name__}")
        if codes.ndim != 3:
            raise ValueError(f"expected codes of rank 3 [B, K, T], got shape {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"expected integer codes, got dtype {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise ValueError(f"expected 1 to {self.num_codebooks} codebooks on axis 1, "
                             f"got {codes.shape[1]}")
        if codes.numel():
            low, high = (int(v) for v in torch.aminmax(codes))
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"codes must lie in [0, {self.codebook_size}), got values in "
                                 f"[{low}, {high}]")
        return codes.long()

    def set_codebook_dropout(self, keep: KeepDistribution) -> None:
        """Validate and store how many codebooks a training sample keeps (the
        ``codebook_dropout`` argument of every quantizer, off by default; see
        :func:`check_keep_distribution`); needs ``num_codebooks`` set."""
        self.register_buffer("keep_probs", check_keep_distribution(keep, self.num_codebooks),
                             persistent=False)

    def drop_codebooks(self, stacked: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Codebook dropout on per-codebook rows [K, B * T, D_k].

        In training, after :meth:`set_codebook_dropout` with a distribution, each sample
        keeps a random prefix of the codebooks and the rows of the others become zeros.
        Returns the rows and the number of codebooks each sample kept [B].
        """
        keep_probs = getattr(self, "keep_probs", None) if self.training else None
        num_kept = sample_num_kept(keep_probs, batch, self.num_codebooks, stacked.device)
        if keep_probs is None:
            return stacked, num_kept
        frames = stacked.shape[1] // batch
        return stacked * rows_keep_mask(num_kept, self.num_codebooks, frames), num_kept

    def prefixes(self) -> range:
        """Every number of codebooks this quantizer encodes with: each prefix 1..K of its
        codebooks, or only K for a continuous bottleneck (its latent is one whole)."""
        return range(self.num_codebooks if self.continuous else 1, self.num_codebooks + 1)

    def resolve_n_q(self, n_q: int | None) -> int:
        """The one rule for ``n_q`` everywhere (encoding, streaming, export, evaluation):
        ``None`` means all K codebooks; any other value must be one of :meth:`prefixes`.
        ValueError (TypeError for a non-integer) says what is valid."""
        if n_q is None:
            return self.num_codebooks
        if isinstance(n_q, bool) or not isinstance(n_q, numbers.Integral):
            raise TypeError(f"n_q must be an integer or None, got {type(n_q).__name__}")
        if n_q in self.prefixes():
            return int(n_q)
        if self.continuous:
            raise ValueError(f"n_q must be None or {self.num_codebooks}, got {n_q}: a "
                             "continuous latent has no codebooks to keep a prefix of")
        raise ValueError(f"n_q must be in 1..{self.num_codebooks}, got {n_q}")


def to_rows(z: Tensor) -> Tensor:
    """[B, D, T] -> [B * T, D] (rows ordered by sample, then frame)."""
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def from_rows(rows: Tensor, batch: int) -> Tensor:
    """[B * T, D] -> [B, D, T]."""
    return rows.reshape(batch, -1, rows.shape[-1]).transpose(1, 2)


def check_keep_distribution(keep: KeepDistribution, num_codebooks: int) -> Tensor | None:
    """Validate a distribution over how many codebooks a sample keeps in training.

    ``None``: no dropout; ``"uniform"``: k in 1..K equally likely; a sequence of K
    non-negative weights: P(keep exactly k) proportional to ``keep[k - 1]``.
    """
    if keep is None:
        return None
    if isinstance(keep, str):
        if keep != "uniform":
            raise ValueError(f"codebook dropout must be None, 'uniform' or {num_codebooks} "
                             f"weights, got {keep!r}")
        return torch.full((num_codebooks,), 1.0 / num_codebooks)
    weights = torch.as_tensor(list(keep), dtype=torch.float64)
    if weights.shape != (num_codebooks,) or bool((weights < 0).any()) or not math.isfinite(
            float(weights.sum())) or float(weights.sum()) <= 0:
        raise ValueError(f"codebook dropout weights must be {num_codebooks} non-negative numbers "
                         f"with a positive sum, got {list(keep)}")
    return (weights / weights.sum()).float()


def sample_num_kept(probs: Tensor | None, batch: int, num_codebooks: int,
                    device: torch.device) -> Tensor:
    """How many codebooks each sample keeps: [B] int64 in 1..K (K when ``probs`` is None)."""
    if probs is None:
        return torch.full((batch,), num_codebooks, dtype=torch.int64, device=device)
    return (torch.multinomial(probs, batch, replacement=True) + 1).to(device)


def keep_mask(num_kept: Tensor, num_codebooks: int) -> Tensor:
    """[B] counts -> [B, K] bool, True for the first ``num_kept[b]`` codebooks."""
    return torch.arange(num_codebooks, device=num_kept.device)[None, :] < num_kept[:, None]


def perplexity(codes: Tensor, codebook_size: int) -> Tensor:
    """exp(entropy) of the empirical code distribution, per codebook: [B, K, T] -> [K].
    (Codes out of range, as a non-finite latent gives FSQ, count as the nearest end.)"""
    num_codebooks = codes.shape[1]
    flat = codes.transpose(0, 1).reshape(num_codebooks, -1).clamp(0, codebook_size - 1)
    offsets = torch.arange(num_codebooks, device=codes.device)[:, None] * codebook_size
    counts = torch.bincount((flat + offsets).reshape(-1),
                            minlength=num_codebooks * codebook_size).view(num_codebooks, -1)
    probs = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)
    return entropy.exp()


def stack_codes(indices: Sequence[Tensor], batch: int) -> Tensor:
    """K index vectors [B * T] -> codes [B, K, T] int64."""
    return torch.stack(list(indices)).view(len(indices), batch, -1).transpose(0, 1)


def stack_streams(stacked: Tensor, batch: int) -> Tensor:
    """Row blocks [K, B * T, D_k] -> streams [B, K, D_k, T]."""
    num_codebooks, _, dim = stacked.shape
    return stacked.view(num_codebooks, batch, -1, dim).permute(1, 0, 3, 2)


def rows_keep_mask(num_kept: Tensor, num_codebooks: int, frames: int) -> Tensor:
    """[B] counts -> [K, B * T, 1] float mask over the rows of each codebook."""
    mask = keep_mask(num_kept, num_codebooks).t()  # [K, B]
    return mask[:, :, None].expand(-1, -1, frames).reshape(num_codebooks, -1, 1).float()


def codebook_metrics(codes: Tensor, codebook_size: int,
                     dead_fractions: Sequence[Tensor] = ()) -> dict[str, Tensor]:
    """``perplexity_k`` and, when given, ``dead_codes_k`` for each codebook k."""
    metrics = {f"perplexity_{k}": value for k, value in
               enumerate(perplexity(codes.detach(), codebook_size))}
    metrics.update({f"dead_codes_{k}": value for k, value in enumerate(dead_fractions)})
    return metrics
