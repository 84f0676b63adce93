"""How dependent the codebooks of token files are: the numbers behind ``mmdtok inspect``
and its heatmap."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mmdtok import patterns
from mmdtok.atomic import atomic_path
from mmdtok.metrics import DependenceReport, dependence_report
from mmdtok.tokens import find_token_files, load_tokens


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


def plot_mutual_information(inspection: TokenInspection, path: str | os.PathLike[str]
                            ) -> Path:
    """A heatmap of the normalized pairwise mutual information (needs matplotlib), in
    the format of ``path``'s suffix (PNG when it has none: ``.png`` is added); returns
    the path written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as error:
        raise ValueError("plotting needs matplotlib: pip install matplotlib (or "
                         "mmdtok[plot])") from error
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
