"""Measures of how a codec uses its codebooks and how dependent they are, from codes
[B, K, T] (in nats).

Plug-in (histogram) estimates are biased: entropies downwards, mutual information and
total correlation upwards, unless the number of rows is much larger than the number of
joint cells (codebook_size squared for a pair): independent codebooks of 256 codes need
well over 65,536 rows to score near 0. ``correction="miller-madow"`` adds the first-order
bias term ``(m - 1) / (2 N)`` to each entropy (m: cells seen, N: rows), which removes
most of it while m is well below N. The paper's normalized pairwise dependence is
``[H(Z_a) + H(Z_b) - H(Z_a, Z_b)] / [H(Z_a) + H(Z_b)]`` averaged over pairs of codebooks:
0 for independent codebooks, 1/2 for a copied one. Dependence is measured at the steps
an LM predicts together under a pattern (``mmdtok.patterns.aligned``): "delay" pairs
``z_k[t - k]``, "parallel" the codes of one frame.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mmdtok import patterns
from mmdtok.losses.independence import IndependenceLoss, Streams

__all__ = ["CodebookUsage", "DependenceReport", "codebook_usage", "dependence_report",
           "entropy", "mutual_information", "normalized_pairwise_dependence",
           "pairwise_mutual_information", "stream_independence", "total_correlation"]

Correction = Literal["none", "miller-madow"]


def _entropy_of_counts(counts: Tensor, correction: Correction = "none") -> Tensor:
    if correction not in ("none", "miller-madow"):
        raise ValueError(f"correction must be 'none' or 'miller-madow', got {correction!r}")
    total = counts.sum()
    probs = counts.double() / total
    probs = probs[probs > 0]
    value = -(probs * probs.log()).sum()
    if correction == "miller-madow":
        value = value + (probs.numel() - 1) / (2 * float(total))
    return value


def entropy(codes: Tensor, codebook_size: int, correction: Correction = "none") -> Tensor:
    """Entropy of a code sequence of any shape, in nats (plug-in, or Miller-Madow)."""
    return _entropy_of_counts(torch.bincount(codes.reshape(-1), minlength=codebook_size),
                              correction)


def _joint_entropy(a: Tensor, b: Tensor, size_b: int, correction: Correction = "none"
                   ) -> Tensor:
    cells = a.reshape(-1) * size_b + b.reshape(-1)
    if cells.numel() and int(cells.max()) < max(4 * cells.numel(), 1 << 16):
        return _entropy_of_counts(torch.bincount(cells), correction)
    # Large codebooks: count the cells that occur, in memory linear in the rows (a dense
    # table of codebook_size ** 2 cells would not fit).
    return _entropy_of_counts(torch.unique(cells, return_counts=True)[1], correction)


def mutual_information(a: Tensor, b: Tensor, size_a: int, size_b: int,
                       correction: Correction = "none") -> Tensor:
    """I(A; B) = H(A) + H(B) - H(A, B) of two aligned code sequences, in nats."""
    if a.shape != b.shape:
        raise ValueError(f"code sequences must align, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return (entropy(a, size_a, correction) + entropy(b, size_b, correction)
            - _joint_entropy(a, b, size_b, correction))


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


def _check_codes(codes: Tensor) -> None:
    if codes.ndim != 3 or codes.shape[1] < 1 or codes.dtype.is_floating_point:
        raise ValueError(f"expected integer codes [B, K, T], got {codes.dtype} of shape "
                         f"{tuple(codes.shape)}")


@dataclass(frozen=True)
class CodebookUsage:
    """Per codebook (tensors [K]): ``entropy`` (nats, plug-in), ``perplexity``
    (``exp(entropy)``, at most the codebook size) and ``utilization`` (share of the
    entries used at least once)."""

    entropy: Tensor
    perplexity: Tensor
    utilization: Tensor


def codebook_usage(codes: Tensor, codebook_size: int) -> CodebookUsage:
    """How codes [B, K, T] use each codebook."""
    _check_codes(codes)
    entropies, used = [], []
    for k in range(codes.shape[1]):  # one codebook's counts at a time: memory O(C)
        counts = torch.bincount(codes[:, k].reshape(-1), minlength=codebook_size)
        entropies.append(_entropy_of_counts(counts))
        used.append(counts.gt(0).sum())
    entropy_k = torch.stack(entropies)
    return CodebookUsage(entropy_k, entropy_k.exp(), torch.stack(used).double() / codebook_size)


def pairwise_mutual_information(codes: Tensor, codebook_size: int, pattern: str = "delay",
                                correction: Correction = "miller-madow",
                                normalized: bool = False) -> Tensor:
    """[K, K] mutual information between codebooks at the steps ``pattern`` aligns; the
    diagonal is each codebook's entropy. ``normalized``: ``I / sqrt(H_a H_b)``, 1 for a
    copied codebook, 0 for independent ones."""
    _check_codes(codes)
    steps = patterns.aligned(codes, pattern)
    k = codes.shape[1]
    entropies = [entropy(steps[:, i], codebook_size, correction) for i in range(k)]
    table = torch.diag(torch.stack(entropies))
    for a, b in itertools.combinations(range(k), 2):
        joint = _joint_entropy(steps[:, a], steps[:, b], codebook_size, correction)
        table[a, b] = table[b, a] = entropies[a] + entropies[b] - joint
    return _normalized_table(table) if normalized else table


def _normalized_table(table: Tensor) -> Tensor:
    """``I / sqrt(H_a H_b)`` from a mutual-information table with entropies on its
    diagonal."""
    scale = table.diagonal().clamp(min=1e-12).sqrt()
    return table / (scale[:, None] * scale[None, :])


def total_correlation(codes: Tensor, codebook_size: int, pattern: str = "delay",
                      correction: Correction = "miller-madow", normalized: bool = True
                      ) -> Tensor:
    """``TC = sum_k H(Z_k) - H(Z_1, ..., Z_K)`` at the steps ``pattern`` aligns, divided by
    ``sum_k H(Z_k)`` when ``normalized`` (0: independent; (K - 1) / K: all copies). The
    joint has up to ``codebook_size ** K`` cells: with realistic row counts the joint
    entropy is capped near ``log(rows)`` and TC is biased upwards; compare codecs at equal
    row counts, or use the pairwise measures."""
    value, marginals = _total_correlation(codes, codebook_size, pattern, correction)
    return value / max(float(marginals), 1e-12) if normalized else value


def _total_correlation(codes: Tensor, codebook_size: int, pattern: str,
                       correction: Correction) -> tuple[Tensor, Tensor]:
    """(TC, sum of the marginal entropies)."""
    _check_codes(codes)
    steps = patterns.aligned(codes, pattern)  # [B, K, T']
    marginals = sum(entropy(steps[:, k], codebook_size, correction)
                    for k in range(steps.shape[1]))
    rows = steps.transpose(1, 2).reshape(-1, steps.shape[1])  # [N, K]
    _, counts = torch.unique(rows, dim=0, return_counts=True)
    return marginals - _entropy_of_counts(counts, correction), marginals


@dataclass(frozen=True)
class DependenceReport:
    """Usage and dependence of codes [B, K, T] under one pattern (see the functions of
    the same names); ``pairwise_dependence`` is the paper's averaged normalized form."""

    pattern: str
    rows: int
    usage: CodebookUsage
    mutual_information: Tensor
    normalized_mutual_information: Tensor
    total_correlation: float
    normalized_total_correlation: float
    pairwise_dependence: float


def dependence_report(codes: Tensor, codebook_size: int, pattern: str = "delay",
                      correction: Correction = "miller-madow") -> DependenceReport:
    """Everything above in one call."""
    _check_codes(codes)
    steps = patterns.aligned(codes, pattern)
    rows = steps.shape[0] * steps.shape[-1]
    pairwise = (float(normalized_pairwise_dependence(codes, codebook_size, pattern))
                if codes.shape[1] > 1 else math.nan)
    table = pairwise_mutual_information(codes, codebook_size, pattern, correction)
    value, marginals = _total_correlation(codes, codebook_size, pattern, correction)
    return DependenceReport(
        pattern, rows, codebook_usage(codes, codebook_size), table, _normalized_table(table),
        float(value), float(value) / max(float(marginals), 1e-12), pairwise)


@torch.no_grad()
def stream_independence(streams: Streams, loss: IndependenceLoss | None = None) -> float:
    """The :class:`~mmdtok.IndependenceLoss` value of per-codebook streams [B, K, D, T]
    (or K tensors [B, D_k, T], e.g. ``codec.encode_streams(audio)``), without gradients:
    dependence as the training loss sees it, on vectors rather than codes. ``loss``
    defaults to a fresh ``IndependenceLoss.from_preset("rff")`` (linear in the number of
    rows, seed 0); a given loss advances its random draws by one call."""
    loss = IndependenceLoss.from_preset("rff") if loss is None else loss
    return float(loss(streams))
