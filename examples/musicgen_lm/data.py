"""Token files in, windows of codes out: random crops for training, fixed windows for
held-out evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmdtok.tokens import find_token_files, load_tokens


@dataclass(frozen=True)
class TokenSet:
    """The codes [K, T_i] of token files made by one codec."""

    codes: list[Tensor]
    codebook_size: int
    codec_fingerprint: str
    codec_origin: str
    frame_rate: float

    @property
    def num_codebooks(self) -> int:
        return self.codes[0].shape[0]

    @property
    def frames(self) -> int:
        return sum(c.shape[-1] for c in self.codes)


def load_token_set(paths: Sequence[str | Path]) -> TokenSet:
    """Every ``.mmdtok`` file under ``paths``; ValueError when none, or when they come
    from different codecs (an LM is trained on one codec's codes)."""
    files = find_token_files(paths)  # ValueError when there are none
    tokens = [load_tokens(path) for path in files]
    first = tokens[0]
    for path, other in zip(files, tokens):
        if other.codec_fingerprint != first.codec_fingerprint:
            raise ValueError(f"{path} was made by another codec than {files[0]} "
                             f"({other.codec_fingerprint} vs {first.codec_fingerprint})")
        if other.num_codebooks != first.num_codebooks:
            raise ValueError(f"{path} holds {other.num_codebooks} codebooks, {files[0]} "
                             f"{first.num_codebooks}: encode all files with the same --n-q")
    return TokenSet([t.codes for t in tokens], first.codebook_size, first.codec_fingerprint,
                    first.codec_origin, first.frame_rate)


class WindowSampler:
    """Batches [B, K, frames] of random crops, files drawn in proportion to their length
    (files shorter than ``frames`` are left out); reproducible from ``seed``."""

    def __init__(self, tokens: TokenSet, frames: int, seed: int = 0) -> None:
        kept = [c for c in tokens.codes if c.shape[-1] >= frames]
        if not kept:
            raise ValueError(f"no token file holds {frames} frames; use a shorter context")
        self.codes, self.frames = torch.cat(kept, dim=-1), frames
        # A crop may start at any frame of a file that leaves room for `frames` frames.
        starts, offset = [], 0
        for c in kept:
            starts.append(torch.arange(offset, offset + c.shape[-1] - frames + 1))
            offset += c.shape[-1]
        self.starts = torch.cat(starts)
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> Tensor:
        picks = self.starts[torch.randint(len(self.starts), (size,), generator=self.generator)]
        index = picks[:, None] + torch.arange(self.frames)  # [B, frames]
        return self.codes[:, index].permute(1, 0, 2)  # [B, K, frames]


def windows(tokens: TokenSet, frames: int) -> Tensor:
    """Every file cut into consecutive windows of ``frames`` frames (the remainder
    dropped): [W, K, frames], for held-out likelihoods."""
    cuts = [c[:, i : i + frames] for c in tokens.codes
            for i in range(0, c.shape[-1] - frames + 1, frames)]
    if not cuts:
        raise ValueError(f"no token file holds {frames} frames")
    return torch.stack(cuts)
