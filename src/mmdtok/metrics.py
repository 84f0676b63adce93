"""Measures of how dependent a codec's codebooks are, from codes [B, K, T].

Plug-in (histogram) estimates, in nats. They are biased upwards unless the number of
rows is much larger than the number of joint cells (codebook_size squared for a pair):
independent codebooks of 256 codes need well over 65,536 rows to score near 0. The
paper's normalized pairwise dependence is
``[H(Z_a) + H(Z_b) - H(Z_a, Z_b)] / [H(Z_a) + H(Z_b)]`` averaged over pairs of codebooks:
0 for independent codebooks, 1/2 for a copied one.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from mmdtok import patterns

__all__ = ["entropy", "mutual_information", "normalized_pairwise_dependence"]


def _entropy_of_counts(counts: Tensor) -> Tensor:
    probs = counts.double() / counts.sum()
    probs = probs[probs > 0]
    return -(probs * probs.log()).sum()


def entropy(codes: Tensor, codebook_size: int) -> Tensor:
    """Plug-in entropy of a code sequence of any shape, in nats."""
    return _entropy_of_counts(torch.bincount(codes.reshape(-1), minlength=codebook_size))


def _joint_entropy(a: Tensor, b: Tensor, size_b: int) -> Tensor:
    return _entropy_of_counts(torch.bincount(a.reshape(-1) * size_b + b.reshape(-1)))


def mutual_information(a: Tensor, b: Tensor, size_a: int, size_b: int) -> Tensor:
    """Plug-in I(A; B) = H(A) + H(B) - H(A, B) of two aligned code sequences, in nats."""
    if a.shape != b.shape:
        raise ValueError(f"code sequences must align, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return entropy(a, size_a) + entropy(b, size_b) - _joint_entropy(a, b, size_b)


def normalized_pairwise_dependence(codes: Tensor, codebook_size: int,
                                   pattern: str = "delay") -> Tensor:
    """Mean over codebook pairs of ``I(Z_a; Z_b) / (H(Z_a) + H(Z_b))`` at the steps an LM
    predicts together under ``pattern`` ("delay" or "parallel"): codes [B, K, T]."""
    if codes.ndim != 3 or codes.shape[1] < 2:
        raise ValueError(f"expected codes [B, K >= 2, T], got shape {tuple(codes.shape)}")
    steps = patterns.aligned(codes, pattern)
    values = []
    for a, b in itertools.combinations(range(codes.shape[1]), 2):
        h_a, h_b = entropy(steps[:, a], codebook_size), entropy(steps[:, b], codebook_size)
        joint = _joint_entropy(steps[:, a], steps[:, b], codebook_size)
        values.append((h_a + h_b - joint) / (h_a + h_b).clamp(min=1e-12))
    return torch.stack(values).mean()
