"""How dependent the codebooks of token files are, or the channel groups of latent
files: the numbers behind ``mmdtok inspect`` and its heatmap."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mmdtok import patterns
from mmdtok.atomic import atomic_path, check_output_file
from mmdtok.metrics import DependenceReport, dependence_report
from mmdtok.tokens import find_token_files, is_latent_file, load_latents, load_tokens


@dataclass(frozen=True)
class TokenInspection:
    """The report over all files, and what the files are."""

    report: DependenceReport
    files: int
    frames: int
    codec: str
    codebook_size: int


def inspect_token_files(paths: Sequence[str | os.PathLike[str]], pattern: str = "delay"
                        ) -> TokenInspection:
    """Usage and dependence of the codebooks over all token files under ``paths``, at the
    steps ``pattern`` ("delay" or "parallel") aligns within each file. The files must come
    from one codec (same codebooks)."""
    if pattern not in ("delay", "parallel"):
        raise ValueError(f"pattern must be 'delay' or 'parallel', got {pattern!r}")
    files = find_token_files(paths)
    steps, frames, first = [], 0, None
    for path in files:
        tokens = load_tokens(path)
        shape = (tokens.codec, tokens.num_codebooks, tokens.codebook_size)
        if first is None:
            first = shape
        elif shape != first:
            raise ValueError(f"{path} holds codes of {shape[0]} ({shape[1]} x {shape[2]}), "
                             f"the first file {first[0]} ({first[1]} x {first[2]}): inspect "
                             "one codec at a time")
        frames += tokens.num_frames
        if tokens.num_frames >= tokens.num_codebooks:  # shorter files have no delayed step
            steps.append(patterns.aligned(tokens.codes[None], pattern))
    if not steps:
        raise ValueError("every file is shorter than its number of codebooks: nothing to "
                         "measure")
    joined = torch.cat(steps, dim=-1)  # [1, K, steps]: already aligned
    report = dataclasses.replace(dependence_report(joined, first[2], "parallel"),
                                 pattern=pattern)
    return TokenInspection(report, len(files), frames, first[0], first[2])


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """The file :func:`plot_mutual_information` writes for ``path``, checked before any
    work: matplotlib is installed, it writes the suffix's format, and the file can be
    written (:func:`mmdtok.atomic.check_output_file`); ValueError otherwise."""
    pyplot = _pyplot()
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{out} is a folder: give the name of an image file to write")
    out = out if out.suffix else out.with_name(out.name + ".png")  # as matplotlib would
    formats = pyplot.figure().canvas.get_supported_filetypes()
    pyplot.close("all")
    if out.suffix[1:].lower() not in formats:
        raise ValueError(f"{out}: matplotlib writes no {out.suffix} images; give one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    return check_output_file(out)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as error:
        raise ValueError("plotting needs matplotlib: pip install matplotlib (or "
                         "mmdtok[plot])") from error
    return pyplot


def plot_mutual_information(inspection: TokenInspection, path: str | os.PathLike[str]
                            ) -> Path:
    """A heatmap of the normalized pairwise mutual information (needs matplotlib), in
    the format of ``path``'s suffix (PNG when it has none: ``.png`` is added); returns
    the path written."""
    pyplot = _pyplot()
    table = inspection.report.normalized_mutual_information.numpy()
    figure, axes = pyplot.subplots(figsize=(4 + 0.3 * len(table), 3.5 + 0.3 * len(table)))
    image = axes.imshow(table, vmin=0, vmax=1, cmap="viridis")
    for i, j in itertools.product(range(len(table)), repeat=2):
        axes.text(j, i, f"{table[i, j]:.3f}", ha="center", va="center",
                  color="white" if table[i, j] < 0.5 else "black", fontsize=8)
    axes.set_xticks(range(len(table)))
    axes.set_yticks(range(len(table)))
    axes.set_xlabel("codebook")
    axes.set_ylabel("codebook")
    axes.set_title(f"normalized MI, {inspection.report.pattern} pattern\n"
                   f"{inspection.codec}, {inspection.report.rows:,} steps")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    out = Path(path)
    out = out if out.suffix else out.with_name(out.name + ".png")  # as matplotlib would
    try:
        with atomic_path(out) as temp:  # creates the folder; never a partial image
            figure.savefig(temp, dpi=100)
    except OSError as error:
        raise ValueError(f"cannot write the heatmap {out}: {error.strerror or error}"
                         ) from error
    finally:
        pyplot.close(figure)
    return out


@dataclass(frozen=True)
class LatentInspection:
    """How dependent the channel groups of continuous latents are.

    independence: the IndependenceLoss (random features, 1,024 per bandwidth, median
        bandwidths; ``pattern`` aligns the groups) of windows of the latents;
        shuffled: the same on a copy whose groups come from independently permuted
        windows (every group's own statistics, no dependence between groups): what
        ``independence`` reads for independent groups, its noise level;
    correlation: [K, K] the largest absolute Pearson correlation between a channel of
        group a and one of group b over all frames (the diagonal: between different
        channels of one group), the strongest linear link.
    """

    files: int
    frames: int
    windows: int
    codec: str
    groups: int
    latent_dim: int
    pattern: str
    independence: float
    shuffled: float
    correlation: torch.Tensor


def inspect_latent_files(paths: Sequence[str | os.PathLike[str]], pattern: str = "delay",
                         groups: int | None = None, window: int = 64, seed: int = 0
                         ) -> LatentInspection:
    """Dependence between the channel groups of the latent files under ``paths`` (one
    codec); ``groups`` defaults to the codec's, as the files record it. Each file is cut
    into windows of ``window`` frames (the remainder dropped)."""
    from mmdtok.losses import IndependenceLoss
    from mmdtok.paths import find_files

    if pattern not in ("delay", "parallel"):
        raise ValueError(f"pattern must be 'delay' or 'parallel', got {pattern!r}")
    files = [f.path for f in find_files(paths, is_latent_file, "latent file (.mmdlat)")]
    if not files:
        raise ValueError(f"no latent files (.mmdlat) in {', '.join(map(str, paths))}")
    latents = [load_latents(path) for path in files]
    first = latents[0]
    given_groups = groups is not None
    groups = groups if given_groups else first.groups
    for path, other in zip(files, latents):
        if other.codec_fingerprint != first.codec_fingerprint:
            raise ValueError(f"{path} was made by another codec than {files[0]}: inspect one "
                             "codec at a time")
    if groups < 2 or first.latent_dim % groups:
        given = "" if given_groups else f" (the codec's own, as {files[0]} records it)"
        raise ValueError(f"groups must be at least 2 and divide the {first.latent_dim} "
                         f"latent channels, got {groups}{given}")
    cuts = [f.latents[:, i : i + window] for f in latents
            for i in range(0, f.num_frames - window + 1, window)]
    if len(cuts) < 2:
        raise ValueError(f"fewer than 2 windows of {window} frames in the files: nothing to "
                         "measure (use a shorter window)")
    stacked = torch.stack(cuts)  # [N, D, W]
    streams = stacked.view(len(cuts), groups, first.latent_dim // groups, window)
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([streams[torch.randperm(len(cuts), generator=generator), k]
                            for k in range(groups)], dim=1)

    def measure(x: torch.Tensor) -> float:  # a fresh loss: the same random features
        return float(IndependenceLoss.from_preset("rff", num_features=1024, pattern=pattern,
                                                  bandwidths="median", seed=seed)(x))

    frames = torch.cat([f.latents for f in latents], dim=-1).double()
    correlation = torch.corrcoef(frames).abs().nan_to_num(0.0)
    size = first.latent_dim // groups
    blocks = correlation.view(groups, size, groups, size).permute(0, 2, 1, 3)
    eye = torch.eye(size, dtype=torch.bool)
    strongest = torch.empty(groups, groups)
    for a, b in itertools.product(range(groups), repeat=2):
        if a != b:
            strongest[a, b] = blocks[a, b].max()
        else:  # between different channels of one group
            strongest[a, b] = blocks[a, b][~eye].max() if size > 1 else 0.0
    return LatentInspection(len(files), sum(f.num_frames for f in latents), len(cuts),
                            first.codec, groups, first.latent_dim, pattern,
                            measure(streams), measure(shuffled), strongest)
