"""Codebook interleaving patterns shared by the independence loss, the metrics and the LM.

A pattern rearranges K parallel code streams so that a language model predicts them in a
given order. Every function here works on both

- codes   ``[B, K, T]`` (integers), and
- streams ``[B, K, D, T]`` (the per-codebook vectors a quantizer emits),

with time always on the last axis and the codebook on axis 1. "delay" means the same
thing everywhere in mmdtok: the loss, the metrics and the LM all import it from here.

Notation in the diagrams: ``a3`` is codebook 0 at frame 3, ``b3`` codebook 1, and so on;
``.`` is the padding value (a special token for codes, zero for streams).

parallel (K = 3, T = 4), one LM step predicts the K codes of one frame::

    a0 a1 a2 a3
    b0 b1 b2 b3
    c0 c1 c2 c3

delay (MusicGen): codebook k is shifted right by k steps, T + K - 1 steps in all::

    a0 a1 a2 a3 .  .
    .  b0 b1 b2 b3 .
    .  .  c0 c1 c2 c3

    at step s the LM predicts (a[s], b[s-1], c[s-2]); the steps where no codebook is
    padding are s = K-1 .. T-1, which ``aligned`` returns (T - K + 1 of them).

flatten: one code per step, frame by frame, K * T steps in one stream::

    a0 b0 c0 a1 b1 c1 a2 b2 c2 a3 b3 c3
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PatternName = Literal["parallel", "delay", "flatten"]
PATTERNS: tuple[PatternName, ...] = ("parallel", "delay", "flatten")

__all__ = [
    "PATTERNS",
    "PatternName",
    "aligned",
    "aligned_list",
    "aligned_offsets",
    "aligned_rows",
    "apply_pattern",
    "delay",
    "flatten",
    "num_steps",
    "revert_pattern",
    "undelay",
    "unflatten",
]


def _check_stacked(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be codes [B, K, T] or streams [B, K, D, T], got shape {tuple(x.shape)}"
        )


def _pad_value(x: Tensor, pad: float | None) -> float:
    """Padding defaults to -1 for codes (never a valid code) and 0 for float streams."""
    if pad is not None:
        return pad
    return 0.0 if x.is_floating_point() else -1


def _check_pattern(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")


def delay(x: Tensor, pad: float | None = None) -> Tensor:
    """Shift codebook k right by k steps: ``[B, K, (D,) T] -> [B, K, (D,) T + K - 1]``.

    ``pad`` fills the steps a codebook has no frame for (default: -1 for codes, 0 for
    streams; an LM passes its special token, usually ``codebook_size``).
    """
    _check_stacked(x, "x")
    num_codebooks, length = x.shape[1], x.shape[-1]
    out = x.new_full((*x.shape[:-1], length + num_codebooks - 1), _pad_value(x, pad))
    # One strided copy per codebook: K is small (a handful), the frames are copied in bulk.
    for k in range(num_codebooks):
        out[:, k, ..., k : k + length] = x[:, k]
    return out


def undelay(x: Tensor, length: int | None = None) -> Tensor:
    """Invert :func:`delay`: ``[B, K, (D,) S] -> [B, K, (D,) S - K + 1]``.

    ``length`` (at most ``S - K + 1``) keeps only the first frames, for an LM that
    generated a partial last step.
    """
    _check_stacked(x, "x")
    num_codebooks, steps = x.shape[1], x.shape[-1]
    full = steps - num_codebooks + 1
    if full < 0:
        raise ValueError(f"a delayed sequence of {num_codebooks} codebooks needs at least "
                         f"{num_codebooks - 1} steps, got {steps}")
    length = full if length is None else length
    if not 0 <= length <= full:
        raise ValueError(f"length must be in [0, {full}], got {length}")
    return _shifted_slices(x, list(range(num_codebooks)), length)


def flatten(x: Tensor) -> Tensor:
    """Interleave the K codebooks frame by frame: ``[B, K, (D,) T] -> [B, 1, (D,) K * T]``."""
    _check_stacked(x, "x")
    if x.ndim == 3:
        batch, num_codebooks, length = x.shape
        return x.transpose(1, 2).reshape(batch, 1, num_codebooks * length)
    batch, num_codebooks, dim, length = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, 1, dim, length * num_codebooks)


def unflatten(x: Tensor, num_codebooks: int) -> Tensor:
    """Invert :func:`flatten`: ``[B, 1, (D,) K * T] -> [B, K, (D,) T]``."""
    _check_stacked(x, "x")
    if x.shape[1] != 1:
        raise ValueError(f"a flattened sequence has one stream, got {x.shape[1]}")
    if num_codebooks < 1 or x.shape[-1] % num_codebooks:
        raise ValueError(f"{x.shape[-1]} steps do not split into {num_codebooks} codebooks")
    length = x.shape[-1] // num_codebooks
    if x.ndim == 3:
        return x.reshape(x.shape[0], length, num_codebooks).transpose(1, 2)
    batch, _, dim, _ = x.shape
    return x.reshape(batch, dim, length, num_codebooks).permute(0, 3, 1, 2)


def num_steps(pattern: PatternName, num_codebooks: int, length: int) -> int:
    """Number of LM steps the pattern needs for ``length`` frames of ``num_codebooks`` codes."""
    _check_pattern(pattern)
    if pattern == "delay":
        return length + num_codebooks - 1
    if pattern == "flatten":
        return length * num_codebooks
    return length


def apply_pattern(x: Tensor, pattern: PatternName, pad: float | None = None) -> Tensor:
    """Lay out ``x`` [B, K, (D,) T] as the LM sees it under ``pattern``."""
    _check_pattern(pattern)
    _check_stacked(x, "x")
    if pattern == "delay":
        return delay(x, pad)
    if pattern == "flatten":
        return flatten(x)
    return x


def revert_pattern(x: Tensor, pattern: PatternName, num_codebooks: int) -> Tensor:
    """Invert :func:`apply_pattern`, back to ``[B, K, (D,) T]``."""
    _check_pattern(pattern)
    _check_stacked(x, "x")
    if pattern == "delay":
        if x.shape[1] != num_codebooks:
            raise ValueError(f"expected {num_codebooks} codebooks, got {x.shape[1]}")
        return undelay(x)
    if pattern == "flatten":
        return unflatten(x, num_codebooks)
    if x.shape[1] != num_codebooks:
        raise ValueError(f"expected {num_codebooks} codebooks, got {x.shape[1]}")
    return x


def aligned(x: Tensor, pattern: Literal["parallel", "delay"]) -> Tensor:
    """The K values an LM predicts together at one step, for the steps with no padding.

    ``[B, K, (D,) T] -> [B, K, (D,) T']``: for "parallel" T' = T and column t holds
    frame t of every codebook; for "delay" T' = T - K + 1 and column s holds
    ``(x_0[s + K - 1], x_1[s + K - 2], ..., x_{K-1}[s])``, i.e. codebook k at frame
    ``t - k`` for ``t = s + K - 1``. This is what the independence loss and the
    dependence metrics compare.
    """
    _check_stacked(x, "x")
    if pattern == "parallel":
        return x
    return torch.stack(aligned_list(list(x.unbind(1)), pattern), dim=1)


def aligned_offsets(pattern: str, num_codebooks: int, length: int) -> tuple[int, list[int]]:
    """How many aligned steps ``length`` frames give, and the frame at which each codebook's
    aligned steps start: under "delay", codebook k contributes frames (K - 1 - k) ..
    (K - 1 - k + steps - 1)."""
    if pattern == "parallel":
        return length, [0] * num_codebooks
    if pattern != "delay":
        raise ValueError(f"aligned steps exist for 'parallel' and 'delay', not {pattern!r}")
    if length < num_codebooks:
        raise ValueError(f"the delay pattern over {num_codebooks} codebooks needs at least "
                         f"{num_codebooks} frames, got {length}")
    return length - num_codebooks + 1, [num_codebooks - 1 - k for k in range(num_codebooks)]


def aligned_list(parts: list[Tensor], pattern: Literal["parallel", "delay"]) -> list[Tensor]:
    """:func:`aligned` for K separate streams [B, D_k, T] whose widths D_k may differ."""
    steps, starts = aligned_offsets(pattern, len(parts), parts[0].shape[-1])
    if pattern == "parallel":
        return list(parts)
    return [part[..., start : start + steps] for part, start in zip(parts, starts)]


def aligned_rows(parts: list[Tensor], pattern: Literal["parallel", "delay"]) -> Tensor:
    """K streams [B, D_k, T] -> rows [B * T', sum D_k]: one row per aligned step (sample
    by sample, step by step), the K vectors side by side."""
    steps = aligned_list(list(parts), pattern)
    return torch.cat([step.transpose(1, 2).reshape(-1, step.shape[1]) for step in steps], dim=1)


def _shifted_slices(x: Tensor, starts: list[int], length: int) -> Tensor:
    """Stack ``x[:, k, ..., starts[k] : starts[k] + length]`` over the codebooks k."""
    return torch.stack([x[:, k, ..., start : start + length] for k, start in enumerate(starts)],
                       dim=1)
