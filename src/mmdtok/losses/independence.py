"""IndependenceLoss: an MMD between the K codebooks' joint distribution and the product
of their marginals, for any multi-stream codec.

Zero if and only if the codebooks (at the steps a language model predicts together) are
independent: the property that makes a factorized (parallel or delay) LM exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from mmdtok import patterns
from mmdtok.distributed import all_reduce_sum, gather_rows, sample_global_rows, shared_sum
from mmdtok.losses import fourier, kernels

Estimator = Literal["shuffle", "exact", "rff"]
Normalization = Literal["rows", "clips"]
Streams = Tensor | Sequence[Tensor]

PAPER_BANDWIDTHS: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0)
MEDIAN_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

PRESETS: dict[str, dict] = {
    # The statistically sound default: normalized by the number of rows.
    "default": {"estimator": "shuffle", "pattern": "delay", "standardize": True,
                "bandwidths": PAPER_BANDWIDTHS, "normalization": "rows"},
    # The published implementation, value for value on the same rows: n = number of clips,
    # clamped at 0. (Its delay also drops the first aligned step: T - K steps, not T - K + 1.)
    "paper": {"estimator": "shuffle", "pattern": "delay", "standardize": True,
              "bandwidths": PAPER_BANDWIDTHS, "normalization": "clips"},
    # Bandwidths that see dependence on standardized high-dimensional rows.
    "median": {"estimator": "exact", "pattern": "delay", "standardize": True,
               "bandwidths": "median", "normalization": "rows"},
    # "median" in linear time: for large macro-batches, and for training on a CPU. (With
    # the paper's fixed bandwidths the random features of standardized 256-dimensional
    # rows see almost nothing: values jump between 1e-22 and 1e-2 from one batch to the
    # next, where this tracks "median" within a factor of about 2.)
    "rff": {"estimator": "rff", "pattern": "delay", "standardize": True,
            "bandwidths": "median", "normalization": "rows", "num_features": 256},
}


class IndependenceLoss(nn.Module):
    """MMD^2 between P(z_1, ..., z_K) and P(z_1) ... P(z_K), from per-codebook streams.

    Input: streams [B, K, D, T], or a list of K tensors [B, D_k, T]; nothing else (the
    loss does not know which quantizer made them). With ``pattern="delay"`` the rows
    compared are ``(z_0[t], z_1[t-1], ..., z_{K-1}[t-K+1])``, the K vectors a delay-pattern
    LM predicts at one step (``mmdtok.patterns.aligned``); with ``"parallel"`` they are
    the K vectors of one frame. The B * T' rows are standardized feature by feature
    (``standardize``), then compared under a sum of Gaussian kernels
    ``exp(-||u - v||^2 / (2 a))`` over ``bandwidths`` (a tuple of ``a``, or ``"median"``:
    ``MEDIAN_FACTORS`` times the median squared distance between rows).

    Estimators:
        shuffle: the paper's Algorithm 1. Each codebook's rows are permuted on their own
            over all rows (a sample of the product of marginals); U-statistics within the
            original and within the shuffled rows, a V-statistic across, normalized by the
            number of rows N (``normalization="rows"``) or, to reproduce the published
            implementation exactly, by the number of clips B with each bandwidth's value
            clamped at 0 (``"clips"``, see ``PRESETS["paper"]``). Can be slightly
            negative with ``"rows"``.
        exact: the closed-form MMD between the empirical joint and the product of the
            empirical marginals (a V-statistic, the d-variable HSIC); what ``shuffle``
            estimates, without permutation noise. >= 0.
        rff: ``exact`` estimated with ``num_features`` random Fourier features per
            bandwidth, linear in N in time and memory, for 10^5 to 10^6 rows. >= 0.

    Memory: the N x N pairs are processed in square tiles (``block_size`` rows a side,
    or ``kernels.tile_side``) and each tile is recomputed in the backward pass, so no N x N
    matrix is ever held.

    Distributed: inside a torch.distributed group, ``shuffle`` and ``exact`` gather the
    rows of all ranks (one macro-batch over all GPUs) and ``rff`` sums its features over
    ranks; every rank computes the same value, and each rank's rows receive the gradient
    of that value. DDP then averages parameter gradients over the W ranks, i.e. applies
    1 / W of the macro-batch gradient: multiply the weight by W to compensate
    (:class:`~mmdtok.losses.MacroBatchIndependence` does).

    Random draws (permutations, frequencies, row subsets) come from a generator seeded by
    ``seed`` and the number of calls so far, identical on every rank.
    """

    def __init__(self, estimator: Estimator = "shuffle", pattern: Literal["delay", "parallel"]
                 = "delay", standardize: bool = True,
                 bandwidths: Sequence[float] | Literal["median"] = PAPER_BANDWIDTHS, *,
                 normalization: Normalization = "rows", num_features: int = 256,
                 block_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        _check_options(estimator, pattern, bandwidths, normalization, num_features, block_size)
        self.estimator, self.pattern, self.standardize = estimator, pattern, standardize
        self.bandwidths = bandwidths if bandwidths == "median" else tuple(map(float, bandwidths))
        self.normalization, self.num_features = normalization, num_features
        self.block_size, self.seed = block_size, seed
        self.register_buffer("num_calls", torch.tensor(0, dtype=torch.int64))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> IndependenceLoss:
        """A loss configured by a named preset (``PRESETS``), with keyword overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def extra_repr(self) -> str:
        return (f"estimator={self.estimator!r}, pattern={self.pattern!r}, "
                f"standardize={self.standardize}, bandwidths={self.bandwidths!r}, "
                f"normalization={self.normalization!r}")

    def generator(self, call: int | None = None) -> torch.Generator:
        """The generator of the random draws of call number ``call`` (0 is the first;
        default: the next call), the same on every rank: a reference implementation can
        draw the same permutations."""
        number = int(self.num_calls) if call is None else call
        key = hash((self.seed, number)) & (2**63 - 1)
        return torch.Generator().manual_seed(key)

    def forward(self, streams: Streams) -> Tensor:
        """The loss (a scalar) of ``streams`` [B, K, D, T] or K tensors [B, D_k, T]."""
        parts = check_streams(streams)
        dims, batch = [part.shape[1] for part in parts], parts[0].shape[0]
        generator = self.generator()
        self.num_calls += 1
        if self.estimator == "rff":
            return self._rff(streams if isinstance(streams, Tensor) else parts, parts, dims,
                             generator)
        rows = patterns.aligned_rows(parts, self.pattern)
        rows = gather_rows(rows)  # every rank now holds the whole macro-batch
        num_clips = int(shared_sum(torch.tensor(batch, device=rows.device)))
        if self.estimator == "shuffle" and (
                rows.shape[0] < 2 or (self.normalization == "clips" and num_clips < 2)):
            raise ValueError(f"the shuffle estimator needs at least 2 rows (and 2 clips with "
                             f"normalization='clips'), got {rows.shape[0]} rows from "
                             f"{num_clips} clips")
        if self.standardize:
            rows = standardize_rows(rows)
        pairs = None
        if self.bandwidths == "median":
            first, second = kernels.random_pairs(rows.shape[0], generator)
            pairs = rows.detach()[first.to(rows.device)], rows.detach()[second.to(rows.device)]
        scales = [0.5 / a for a in self._bandwidths(pairs)]
        if self.estimator == "exact":
            joint_sums, row_means = kernels.exact_stats(rows, dims, scales, self.block_size)
            return kernels.exact_mmd(joint_sums, row_means).sum().to(rows.dtype)
        shuffled = kernels.shuffle_rows(rows, dims, generator)
        count = num_clips if self.normalization == "clips" else rows.shape[0]
        sums, diagonals = kernels.shuffle_sums(rows, shuffled, scales, self.block_size,
                                               kernels.shuffle_slopes(count, len(scales)))
        if self.normalization == "clips":
            return kernels.shuffle_mmd_by_clips(sums, num_clips).sum().to(rows.dtype)
        return kernels.shuffle_mmd(sums, diagonals, rows.shape[0]).sum().to(rows.dtype)

    def _bandwidths(self, pairs: tuple[Tensor, Tensor] | None) -> tuple[float, ...]:
        """The bandwidths ``a``; for "median", from pairs of rows (the same on every rank)."""
        if self.bandwidths != "median":
            return self.bandwidths
        median = kernels.median_sqdist(*pairs)
        return tuple(factor * max(median, 1e-12) for factor in MEDIAN_FACTORS)

    def _rff(self, streams: Streams, parts: list[Tensor], dims: list[int],
             generator: torch.Generator) -> Tensor:
        """Streamed over clips: rows are never materialized (see :mod:`fourier`)."""
        steps = patterns.aligned_rows([part[:1] for part in parts], self.pattern).shape[0]
        if self.standardize:
            mean, inv_std, num_rows = fourier.row_moments(parts, self.pattern)
        else:
            count = torch.tensor(float(parts[0].shape[0] * steps), dtype=torch.float64,
                                 device=parts[0].device)
            mean, inv_std, num_rows = None, None, int(all_reduce_sum(count))
        pairs = None
        if self.bandwidths == "median":  # rows of the first clips of every rank
            clips = max(1, MEDIAN_SAMPLE_ROWS // steps)
            with torch.no_grad():
                sample = patterns.aligned_rows([part[:clips] for part in parts], self.pattern)
                if mean is not None:
                    sample = (sample - mean) * inv_std
                sample = sample_global_rows(sample, 2 * kernels.MEDIAN_PAIRS, generator)
            pairs = sample[: kernels.MEDIAN_PAIRS], sample[kernels.MEDIAN_PAIRS :]
        bandwidths = self._bandwidths(pairs)
        freqs = fourier.frequencies(sum(dims), bandwidths, self.num_features,
                                    generator).to(parts[0])
        stats = (mean, inv_std) if mean is not None else None
        sums = shared_sum(fourier.fourier_sums(streams, self.pattern, freqs, stats))
        return fourier.fourier_mmd(sums, num_rows, len(bandwidths)).sum().to(parts[0].dtype)


# Rows (from the first clips) from which rff draws the pairs of its median bandwidth.
MEDIAN_SAMPLE_ROWS = 1 << 16
def standardize_rows(rows: Tensor) -> Tensor:
    """Each feature of rows [N, P] to mean 0 and variance 1 over the rows. The moments
    are taken in float64 and the variance floor is relative (``STANDARDIZE_EPS`` times
    the features' mean variance), so the result does not depend on the scale of the
    rows: float16 rows, or rows scaled by 1e-10 or 1e20, standardize as the same rows at
    unit scale would. Float32 (at least) out."""
    wide = rows.double()
    mean = wide.mean(0)
    var = (wide - mean.detach()).square().mean(0)
    floor = fourier.STANDARDIZE_EPS * var.detach().mean() + torch.finfo(torch.float64).tiny
    out = (wide - mean) * torch.rsqrt(var + floor)
    return out.to(torch.promote_types(rows.dtype, torch.float32))


def check_streams(streams: Streams) -> list[Tensor]:
    """Validate streams [B, K, D, T] or K tensors [B, D_k, T]; return the K tensors."""
    if isinstance(streams, Tensor):
        if streams.ndim != 4:
            raise ValueError(f"expected streams [B, K, D, T] or a list of K tensors "
                             f"[B, D_k, T], got shape {tuple(streams.shape)}")
        parts = list(streams.unbind(1))
    elif isinstance(streams, (list, tuple)) and all(isinstance(s, Tensor) for s in streams):
        parts = list(streams)
        if any(part.ndim != 3 for part in parts):
            raise ValueError(f"each of the K streams must be [B, D_k, T], got shapes "
                             f"{[tuple(p.shape) for p in parts]}")
        if len({(p.shape[0], p.shape[-1]) for p in parts}) > 1:
            raise ValueError(f"the K streams must share B and T, got shapes "
                             f"{[tuple(p.shape) for p in parts]}")
    else:
        raise TypeError(f"expected a tensor [B, K, D, T] or a list of K tensors [B, D_k, T], "
                        f"got {type(streams).__name__}")
    if len(parts) < 2:
        raise ValueError(f"independence needs at least 2 codebooks, got {len(parts)}")
    if parts[0].shape[0] == 0 or parts[0].shape[-1] == 0:
        raise ValueError(f"the streams are empty (B = {parts[0].shape[0]} clips of T = "
                         f"{parts[0].shape[-1]} frames)")
    if any(part.shape[1] == 0 for part in parts):
        raise ValueError(f"every stream needs D >= 1 dimensions, got "
                         f"{[part.shape[1] for part in parts]}")
    if not all(part.is_floating_point() for part in parts):
        raise ValueError("streams must be floating-point vectors, not codes; pass "
                         "QuantizerOutput.streams")
    if not all(bool(torch.isfinite(part).all()) for part in parts):
        raise ValueError("the streams contain NaN or infinite values")
    return parts


def stream_rows(streams: Streams, pattern: str) -> tuple[Tensor, list[int], int]:
    """Validate streams and fold them to rows: [N = B * T', sum D_k], the block widths
    D_k, and the batch size B."""
    parts = check_streams(streams)
    return patterns.aligned_rows(parts, pattern), [p.shape[1] for p in parts], parts[0].shape[0]


def _check_options(estimator: str, pattern: str, bandwidths, normalization: str,
                   num_features: int, block_size: int | None) -> None:
    if estimator not in ("shuffle", "exact", "rff"):
        raise ValueError(f"estimator must be 'shuffle', 'exact' or 'rff', got {estimator!r}")
    if pattern not in ("delay", "parallel"):
        raise ValueError(f"pattern must be 'delay' or 'parallel', got {pattern!r}")
    if isinstance(bandwidths, str):
        if bandwidths != "median":
            raise ValueError(f"bandwidths must be positive numbers or 'median', "
                             f"got {bandwidths!r}")
    elif not bandwidths or any(not float(a) > 0 for a in bandwidths):
        raise ValueError(f"bandwidths must be positive numbers or 'median', got {bandwidths!r}")
    if normalization not in ("rows", "clips"):
        raise ValueError(f"normalization must be 'rows' or 'clips', got {normalization!r}")
    if normalization == "clips" and estimator != "shuffle":
        raise ValueError("normalization='clips' reproduces the published shuffle estimator; "
                         "use it with estimator='shuffle'")
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1 or None, got {block_size}")


def straight_through_streams(z: Tensor, stage_codes: Tensor | Sequence[Tensor]) -> Tensor:
    """Streams [B, K, D, T] with gradients from a residual quantizer of another library.

    ``z`` [B, D, T] is the quantizer's input; ``stage_codes`` the code vector each of K
    stages chose, [K, B, D, T] or K tensors [B, D, T] (e.g. vector-quantize-pytorch's
    ``return_all_codes``, moved to channels-first). Stream k is the code vector with a
    straight-through gradient to the residual ``z - q_0 - ... - q_{k-1}``, as in
    :class:`mmdtok.quantizers.ResidualVQ`. (In training, vector-quantize-pytorch looks
    ``all_codes`` up after its EMA update, so they are the updated codes of the chosen
    indices, slightly off the ones its forward used.)
    """
    codes = [code.detach() for code in stage_codes]
    if any(code.shape != z.shape for code in codes):
        raise ValueError(f"each stage's codes must have the shape of z {tuple(z.shape)}, got "
                         f"{[tuple(c.shape) for c in codes]}")
    streams, residual = [], z
    for code in codes:
        streams.append(residual + (code - residual).detach())
        residual = residual - code
    return torch.stack(streams, dim=1)
