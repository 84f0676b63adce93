"""A Euclidean codebook: nearest-neighbour search, k-means init, EMA updates, dead codes.

The math is in free functions; :class:`EuclideanCodebook` owns the buffers and calls
them. Batch statistics (k-means sums, EMA counts and sums, rows drawn to replace dead
codes) are reduced over torch.distributed ranks in float64, so that every rank keeps a
bit-identical codebook, equal to what one process computes on the concatenated batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.distributed import all_reduce_sum, sample_global_rows
from mmdtok.quantizers.base import (
    QuantizerOutput,
    codebook_metrics,
    from_rows,
    stack_codes,
    stack_streams,
)

DeadCodeUnit = Literal["share", "count"]

# EMA decay of the usage counts of a learned codebook (decay=None), used for dead codes.
USAGE_DECAY = 0.99

# Elements of the [rows, codes] distance block of the nearest-neighbour search: 4M floats
# (16 MiB, 2,048 rows of 2,048 codes). A block this size is recycled by the allocator
# instead of being mapped fresh from the system at every stage (page faults measured at
# 1.6x the cost on 16,000 rows), and memory stays bounded whatever the input length.
SEARCH_BLOCK_ELEMENTS = 1 << 22


def nearest(rows: Tensor, embed: Tensor, embed_sqnorm: Tensor | None = None) -> Tensor:
    """Index of the nearest code for each row: rows [N, D], embed [C, D] -> [N] int64.

    ``||r - c||^2 = |r|^2 - 2 r.c + |c|^2``; ``|r|^2`` does not change the argmin, so one
    ``addmm`` per block of rows does the work.
    """
    if embed_sqnorm is None:
        embed_sqnorm = embed.pow(2).sum(dim=1)
    embed_t = embed.t()
    num_rows, num_codes = rows.shape[0], embed.shape[0]
    block_rows = max(1, SEARCH_BLOCK_ELEMENTS // num_codes)
    if not isinstance(num_rows, int) or num_rows <= block_rows:  # symbolic size: a graph
        return torch.addmm(embed_sqnorm, rows, embed_t, alpha=-2).argmin(dim=1)
    index = torch.empty(num_rows, dtype=torch.int64, device=rows.device)
    with torch.no_grad():
        distances = rows.new_empty(block_rows, num_codes)
        for start in range(0, num_rows, block_rows):
            block = rows[start : start + block_rows]
            out = distances[: block.shape[0]]
            torch.addmm(embed_sqnorm, block, embed_t, alpha=-2, out=out)
            torch.argmin(out, dim=1, out=index[start : start + block.shape[0]])
    return index


def cluster_stats(rows: Tensor, index: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """Counts [C] and sums [C, D] of the rows assigned to each code, in float64, summed
    over ranks."""
    counts = torch.bincount(index, minlength=num_codes).to(torch.float64)
    sums = rows.new_zeros(num_codes, rows.shape[1], dtype=torch.float64)
    sums.index_add_(0, index, rows.to(torch.float64))
    all_reduce_sum(counts)
    all_reduce_sum(sums)
    return counts, sums


def kmeans(rows: Tensor, num_codes: int, iters: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means over the rows of all ranks: [N, D] -> centroids [C, D].

    Starts from rows drawn at random (the same on every rank); a code that attracts no
    row keeps its previous centroid.
    """
    centroids = sample_global_rows(rows, num_codes, generator)
    for _ in range(iters):
        counts, sums = cluster_stats(rows, nearest(rows, centroids), num_codes)
        used = counts > 0
        means = (sums / counts.clamp(min=1)[:, None]).to(rows.dtype)
        centroids = torch.where(used[:, None], means, centroids)
    return centroids


def all_finite(rows: Tensor) -> bool:
    """True when no rank's rows hold a NaN or an infinite value (the same on every rank)."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(rows).all()) else 1.0], device=rows.device)
    return float(all_reduce_sum(bad)) == 0.0


def ema_(average: Tensor, value: Tensor, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * value``, in place."""
    average.mul_(decay).add_(value.to(average.dtype), alpha=1 - decay)


def laplace_smoothed(counts: Tensor, eps: float) -> Tensor:
    """Counts with additive smoothing that keeps their total: no code divides by zero."""
    total = counts.sum()
    return (counts + eps) / (total + counts.numel() * eps) * total


@dataclass(frozen=True)
class CodebookOptions:
    """How a Euclidean codebook learns: one frozen object that the quantizers pass down
    to each of their codebooks.

    decay: EMA decay of the codebook statistics; ``None`` learns the codes by gradient
        (the quantizer then returns ``losses["codebook"]``).
    kmeans_iters: Lloyd iterations of the initialization on the first batch (0: random
        rows of that batch).
    dead_code_threshold, dead_code_unit: when a code is replaced by a batch row:
        ``"share"``, a fraction of the uniform share ``N / C`` of a global batch of N rows
        (independent of the batch size); ``"count"``, an absolute EMA count (EnCodec: 2).
    seed: seeds the random draws (identical on every rank); codebook k of a quantizer
        uses ``seed * 1000 + k``.
    eps: additive smoothing of the EMA counts.
    """

    decay: float | None = 0.99
    kmeans_iters: int = 50
    dead_code_threshold: float = 0.1
    dead_code_unit: DeadCodeUnit = "share"
    seed: int = 0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.decay is not None and not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1) or None (learned codebook), "
                             f"got {self.decay}")
        if self.kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {self.kmeans_iters}")
        if self.dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got "
                             f"{self.dead_code_threshold}")
        if self.dead_code_unit not in ("share", "count"):
            raise ValueError(f"dead_code_unit must be 'share' or 'count', got "
                             f"{self.dead_code_unit!r}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodebookOptions:
        return config_from_dict(cls, data, "codebook option")


@dataclass(frozen=True)
class CodebookStep:
    """One codebook applied to rows [N, D].

    index: [N] int64. code: [N, D], the chosen code vectors (a gradient reaches a learned
    codebook). stream: [N, D], the code vectors with a straight-through gradient to the
    rows. commitment: mean ||rows - sg(code)||^2. codebook_loss: mean ||sg(rows) - code||^2
    for a learned codebook, else None. dead_fraction: codes that were dead before this
    step's replacement (training) or are dead now (evaluation).
    """

    index: Tensor
    code: Tensor
    stream: Tensor
    commitment: Tensor
    codebook_loss: Tensor | None
    dead_fraction: Tensor


class EuclideanCodebook(nn.Module):
    """C codes of dimension D, updated by EMA (``decay``) or learned by gradient
    (``decay=None``).

    Buffers: ``embed`` [C, D] (a parameter when learned), ``cluster_size`` [C] and
    ``embed_sum`` [C, D] (EMA statistics), ``initialized``, ``num_updates`` (seeds the
    random draws, so that resuming from a state dict continues exactly).

    Initialization: the first batch the codebook sees (in any mode) sets the codes by
    ``kmeans_iters`` Lloyd iterations started from random rows of that batch;
    ``kmeans_iters=0`` keeps the random rows.

    Dead codes: after each training update, a code whose EMA count is below the threshold
    is replaced by a row drawn from the current batch. With ``dead_code_unit="share"`` the
    threshold is a fraction of the uniform share ``N / C`` of the global batch of N rows
    (it does not depend on the batch size); with ``"count"`` it is an absolute EMA count
    (EnCodec uses 2).
    """

    def __init__(self, dim: int, codebook_size: int,
                 options: CodebookOptions = CodebookOptions()) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1, got {dim} and "
                             f"{codebook_size}")
        self.dim, self.codebook_size, self.options = dim, codebook_size, options
        decay = options.decay
        embed = torch.zeros(codebook_size, dim)
        if decay is None:
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"{self.codebook_size} x {self.dim}, decay={self.options.decay}"

    def _generator(self, purpose: int) -> torch.Generator:
        """A generator in the same state on every rank, seeded by (seed, update count,
        purpose): tuples of ints hash the same in every process."""
        key = hash((self.options.seed, int(self.num_updates), purpose)) & (2**63 - 1)
        return torch.Generator().manual_seed(key)

    def nearest(self, rows: Tensor) -> Tensor:
        """Code index for each row [N, D] -> [N] int64."""
        embed = self.embed.detach()
        return nearest(rows.detach().to(embed.dtype), embed, self._sqnorm())

    def _sqnorm(self) -> Tensor | None:
        """|c|^2 of every code, kept in eval mode while the codebook does not change (a
        stream asks for a few rows at a time); None in training mode (updates go through
        ``.data``, which a version count does not see; ``train()`` drops the cache) and
        inside a graph being traced."""
        if self.training or torch.compiler.is_compiling():
            return None
        embed = self.embed
        # a tensor made in inference mode keeps no update count (nor is it updated)
        updates = -1 if embed.is_inference() else embed._version
        key = (embed.data_ptr(), updates, embed.dtype, embed.device)
        if getattr(self, "_sqnorm_key", None) != key:
            self._sqnorm_cache = embed.detach().pow(2).sum(dim=1)
            self._sqnorm_key = key
        return self._sqnorm_cache

    def train(self, mode: bool = True) -> EuclideanCodebook:
        self._sqnorm_key = None
        return super().train(mode)

    def lookup(self, index: Tensor) -> Tensor:
        """Code vectors for indices of any shape -> [..., D]."""
        return F.embedding(index, self.embed)

    @torch.no_grad()
    def initialize(self, rows: Tensor) -> None:
        """k-means on the first batch (all ranks together), once; a batch with NaN or
        infinite values on any rank is not used."""
        if bool(self.initialized):
            return
        rows = rows.detach().float()
        if not all_finite(rows):
            return
        centroids = kmeans(rows, self.codebook_size, self.options.kmeans_iters,
                           self._generator(0))
        counts, _ = cluster_stats(rows, nearest(rows, centroids), self.codebook_size)
        self.embed.data.copy_(centroids)
        self.cluster_size.copy_(counts.to(self.cluster_size.dtype))
        self.embed_sum.copy_(centroids * self.cluster_size[:, None])
        self.initialized.fill_(True)

    def quantize(self, rows: Tensor) -> CodebookStep:
        """Initialize if needed, assign each row [N, D] its nearest code and, in training,
        update the statistics (after the assignment: the codes used here stay as they were).
        """
        self.initialize(rows)
        index = self.nearest(rows)
        code = self.lookup(index).to(rows.dtype)
        if self.training:
            dead_fraction = self.update(rows, index)
        else:
            threshold = self.dead_threshold(rows.shape[0])
            dead_fraction = (self.cluster_size < threshold).float().mean()
        code_sg = code.detach()
        return CodebookStep(
            index=index,
            code=code,
            stream=rows + (code_sg - rows).detach(),
            commitment=F.mse_loss(rows, code_sg),
            codebook_loss=F.mse_loss(code, rows.detach()) if self.options.decay is None else None,
            dead_fraction=dead_fraction,
        )

    def dead_threshold(self, num_rows: int) -> float:
        """EMA count below which a code counts as dead, for a global batch of ``num_rows``."""
        if self.options.dead_code_unit == "count":
            return self.options.dead_code_threshold
        return self.options.dead_code_threshold * num_rows / self.codebook_size

    @torch.no_grad()
    def update(self, rows: Tensor, index: Tensor) -> Tensor:
        """One training update from the batch rows [N, D] and their codes [N].

        EMA of counts and sums (when ``decay`` is set), then dead-code replacement.
        Returns the fraction of codes that were dead before the replacement. A batch with
        NaN or infinite rows on any rank changes nothing (its sums, summed over ranks, are
        not finite): a diverging step never poisons the codebooks.
        """
        rows = rows.detach().float()
        counts, sums = cluster_stats(rows, index, self.codebook_size)
        total_rows, finite = counts.sum(), torch.isfinite(sums).all()
        if not bool(finite):
            return torch.tensor(0.0)
        total_rows = int(total_rows)  # counts are summed over ranks already
        decay = self.options.decay
        if decay is not None:
            ema_(self.cluster_size, counts, decay)
            ema_(self.embed_sum, sums, decay)
            smoothed = laplace_smoothed(self.cluster_size, self.options.eps)
            self.embed.copy_(self.embed_sum / smoothed[:, None])
        else:
            ema_(self.cluster_size, counts, USAGE_DECAY)
        threshold = self.dead_threshold(total_rows)
        dead = self.cluster_size < threshold
        num_dead = int(dead.sum())
        if num_dead:
            # num_dead is the same on every rank (cluster_size is), so is the draw.
            fresh = sample_global_rows(rows, num_dead, self._generator(1))
            reset = max(threshold, 1.0)  # a fresh code gets a chance before it expires again
            self.embed.data[dead] = fresh.to(self.embed.dtype)
            self.cluster_size[dead] = reset
            self.embed_sum[dead] = (fresh * reset).to(self.embed_sum.dtype)
        self.num_updates += 1
        return torch.tensor(num_dead / self.codebook_size)


def make_codebooks(num: int, dim: int, codebook_size: int, options: CodebookOptions
                   ) -> nn.ModuleList:
    """``num`` codebooks with the same options and distinct random streams."""
    return nn.ModuleList(
        EuclideanCodebook(dim, codebook_size, replace(options, seed=options.seed * 1_000 + k))
        for k in range(num)
    )


def vq_output(steps: list[CodebookStep], quantized: Tensor, num_kept: Tensor, batch: int,
              codebook_size: int) -> QuantizerOutput:
    """The :class:`QuantizerOutput` of K codebook steps and the quantized rows [B * T, D]."""
    losses = {"commitment": torch.stack([step.commitment for step in steps]).mean()}
    if steps[0].codebook_loss is not None:
        losses["codebook"] = torch.stack([step.codebook_loss for step in steps]).mean()
    codes = stack_codes([step.index for step in steps], batch)
    return QuantizerOutput(
        quantized=from_rows(quantized, batch),
        codes=codes,
        streams=stack_streams(torch.stack([step.stream for step in steps]), batch),
        losses=losses,
        metrics=codebook_metrics(codes, codebook_size, [step.dead_fraction for step in steps]),
        num_kept=num_kept,
    )
