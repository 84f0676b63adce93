"""Latent files in, training windows out: random crops that never cross files, each with
its prompt and timing (where the window starts in its piece, how long the piece is)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import torch
from torch import Tensor

from examples.latent_diffusion.text import prompt_for
from mmdtok.paths import find_files, read_manifest
from mmdtok.tokens import is_latent_file, load_latents


@dataclass(frozen=True)
class LatentSet:
    """The latents [D, T_i] of latent files made by one codec, with one prompt each."""

    latents: list[Tensor]
    prompts: list[str]
    names: list[str]
    frame_rate: float
    codec_fingerprint: str
    codec_origin: str

    @property
    def latent_dim(self) -> int:
        return self.latents[0].shape[0]

    def statistics(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and standard deviation over every frame [D]."""
        joined = torch.cat(self.latents, dim=-1).double()
        return joined.mean(dim=1).float(), joined.std(dim=1).float()


class ManifestPrompts:
    """The prompts of a corpus manifest's entries, found by a latent file's path relative
    to the folder it was found in (``mmdtok encode`` mirrors a manifest's files from the
    folder that holds them all): the entry whose path, without its suffix, ends with
    those parts. A name shared by several entries (``track1`` of two packages) is told
    apart by its folders."""

    def __init__(self, manifest: str | Path | None) -> None:
        self.by_name: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for entry in read_manifest(manifest) if manifest is not None else []:
            parts = entry["path"].with_suffix("").parts
            self.by_name.setdefault(parts[-1], []).append((parts, prompt_for(entry)))

    def __call__(self, relative: PurePath) -> str:
        """The prompt of the file at ``relative``; "" when the manifest does not list it;
        ValueError when several entries fit."""
        parts = relative.with_suffix("").parts
        fits = [prompt for path, prompt in self.by_name.get(parts[-1], [])
                if path[-len(parts):] == parts]
        if len(fits) > 1:
            raise ValueError(f"{relative} fits {len(fits)} entries of the manifest: keep the "
                             "folders mmdtok encode mirrored")
        return fits[0] if fits else ""


def load_latent_set(paths: Sequence[str | Path], manifest: str | Path | None = None
                    ) -> LatentSet:
    """Every ``.mmdlat`` file under ``paths``; the prompt of each is its manifest entry's
    (:class:`ManifestPrompts`, "" when absent). ValueError when there are none or they
    come from different codecs."""
    found = find_files(paths, is_latent_file)
    if not found:
        raise ValueError(f"no latent files (.mmdlat) in {', '.join(map(str, paths))}")
    loaded = [load_latents(f.path) for f in found]
    first = loaded[0]
    for f, other in zip(found, loaded):
        if other.codec_fingerprint != first.codec_fingerprint:
            raise ValueError(f"{f.path} was made by another codec than {found[0].path}")
    prompts = ManifestPrompts(manifest)
    return LatentSet([x.latents for x in loaded], [prompts(f.relative) for f in found],
                     [str(f.relative) for f in found], first.frame_rate,
                     first.codec_fingerprint, first.codec_origin)


@dataclass(frozen=True)
class Batch:
    """latents [B, D, frames] (zeros past a file's end), mask [B, frames] (True on real
    frames), prompts, seconds_start and seconds_total [B]."""

    latents: Tensor
    mask: Tensor
    prompts: list[str]
    seconds_start: Tensor
    seconds_total: Tensor


class CropSampler:
    """Random windows of ``frames`` frames, files drawn in proportion to their length; a
    window starts anywhere in its file and never reaches into another (a file shorter
    than the window is taken whole and padded). Reproducible from ``seed``."""

    def __init__(self, data: LatentSet, frames: int, seed: int = 0) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.data, self.frames = data, frames
        self.lengths = torch.tensor([x.shape[-1] for x in data.latents], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> Batch:
        picks = torch.multinomial(self.lengths, size, replacement=True,
                                  generator=self.generator).tolist()
        latents = torch.zeros(size, self.data.latent_dim, self.frames)
        mask = torch.zeros(size, self.frames, dtype=torch.bool)
        starts = []
        for row, index in enumerate(picks):
            source = self.data.latents[index]
            room = max(source.shape[-1] - self.frames, 0)
            start = int(torch.randint(room + 1, (1,), generator=self.generator))
            piece = source[:, start : start + self.frames]
            latents[row, :, : piece.shape[-1]] = piece
            mask[row, : piece.shape[-1]] = True
            starts.append(start)
        rate = self.data.frame_rate
        return Batch(latents, mask, [self.data.prompts[i] for i in picks],
                     torch.tensor(starts, dtype=torch.float32) / rate,
                     self.lengths[picks].float() / rate)
