"""Training data for the codec: random crops of audio files, as batches that depend only
on (seed, step, rank), so that a resumed run sees exactly the batches it would have seen.

Sources are folders (searched recursively) or manifests (JSON lines with ``path`` and
optionally ``split`` and ``duration``, as written by the recipes of
``examples/datasets``). Files in a folder are split by a hash of their path
(``valid_fraction`` of them for validation). Each crop draws its file uniformly
(``sampling="file"``) or in proportion to the files' durations (``"duration"``: every
second of audio equally likely, so a long recording is not drawn as often as a short
render). A file that cannot be read is logged once and never drawn again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmdtok.audio import is_audio_file, match_channels, resample
from mmdtok.paths import find_files, is_manifest, read_manifest
from mmdtok.train.config import TrainConfig

log = logging.getLogger(__name__)
SAMPLING = ("file", "duration")


@dataclass(frozen=True)
class AudioFile:
    path: Path
    split: str
    duration: float | None = None  # seconds, when a manifest gives it

    def seconds(self) -> float:
        """The duration: the manifest's, else read from the file (0 if unreadable)."""
        if self.duration is not None:
            return self.duration
        import soundfile

        try:
            info = soundfile.info(str(self.path))
        except (RuntimeError, OSError):
            return 0.0
        return info.frames / info.samplerate if info.samplerate else 0.0


def hash_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (sha256): assigns items to splits without
    depending on which other items exist."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def corpus_split(name: str, seed: int = 0) -> str:
    """The corpus recipes' rule: train (90 %), valid (5 %) or test (5 %), fixed by a
    hash of the seed and the piece's name."""
    fraction = hash_fraction(f"{seed}:{name}")
    return "test" if fraction < 0.05 else "valid" if fraction < 0.10 else "train"


def _hash_split(path: str, valid_fraction: float) -> str:
    return "valid" if hash_fraction(path) < valid_fraction else "train"


def find_audio(sources: Sequence[str | os.PathLike[str]], valid_fraction: float = 0.05
               ) -> list[AudioFile]:
    """Audio files of folders and manifests, with their split ("train", "valid",
    "test"); ValueError for a missing source or a malformed manifest line."""
    files: list[AudioFile] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += [AudioFile(f.path, _hash_split(f.relative.as_posix(), valid_fraction))
                      for f in find_files([source], is_audio_file, "audio file")]
        elif source.is_file() and is_manifest(source):
            for entry in read_manifest(source):
                path = entry["path"]
                split = entry.get("split") or _hash_split(path.as_posix(), valid_fraction)
                duration = entry.get("duration")
                if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not (
                        0 <= duration < math.inf):
                    duration = None
                files.append(AudioFile(path, split, duration))
        else:
            raise ValueError(f"no such folder or manifest (.jsonl): {source}")
    return files


class ClipSampler:
    """Batches [B, C, L] of random crops of ``segment`` samples at ``sample_rate``.

    ``batch(step)`` draws its files and offsets from a generator seeded by
    (seed, step, rank): no state to save for an exact resume. Crops of files shorter than
    the segment are zero-padded at the end.
    """

    def __init__(self, files: Sequence[AudioFile], *, sample_rate: int, channels: int,
                 segment: int, batch_size: int, seed: int = 0, rank: int = 0,
                 sampling: str = "file") -> None:
        if not files:
            raise ValueError("no audio files to train on")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        self.files, self.sample_rate, self.channels = list(files), sample_rate, channels
        self.segment, self.batch_size, self.seed, self.rank = segment, batch_size, seed, rank
        self.bad: dict[Path, str] = {}  # files that failed to load, and why
        self.cumulative: np.ndarray | None = None  # of the durations, for "duration"
        if sampling == "duration":
            seconds = np.array([f.seconds() for f in self.files], dtype=np.float64)
            if seconds.sum() <= 0:
                raise ValueError("sampling='duration' needs files with a known, positive "
                                 "duration")
            self.cumulative = np.cumsum(seconds) / seconds.sum()

    @classmethod
    def from_config(cls, files: Sequence[AudioFile], config: TrainConfig, *, sample_rate: int,
                    channels: int, rank: int = 0) -> ClipSampler:
        """The sampler of a training run: the run's segment length, batch size and seed,
        at the codec's ``sample_rate`` and ``channels``."""
        return cls(files, sample_rate=sample_rate, channels=channels,
                   segment=round(config.segment_seconds * sample_rate),
                   batch_size=config.batch_size, seed=config.seed, rank=rank,
                   sampling=config.sampling)

    def batch(self, step: int, rank: int | None = None) -> Tensor:
        """The batch of ``step`` on this sampler's rank (or on ``rank``)."""
        rng = np.random.default_rng([self.seed, step, self.rank if rank is None else rank])
        clips = []
        while len(clips) < self.batch_size:
            if len(self.bad) == len(self.files):
                path, reason = next(iter(self.bad.items()))
                raise ValueError(f"every one of the {len(self.files)} training audio files "
                                 f"failed to load, e.g. {path}: {reason}")
            file = self.files[self._draw(rng)]
            if file.path in self.bad:
                continue
            try:
                clips.append(self.crop(file.path, float(rng.random())))
            except (ValueError, RuntimeError, OSError) as error:
                log.warning("skipping %s: %s", file.path, error)
                self.bad[file.path] = str(error)
        return torch.stack(clips)

    def _draw(self, rng: np.random.Generator) -> int:
        if self.cumulative is None:
            return int(rng.integers(len(self.files)))
        index = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        return min(index, len(self.files) - 1)

    def crop(self, path: Path, position: float) -> Tensor:
        """A crop [C, segment] starting at ``position`` (0..1) of the free range."""
        import soundfile

        with soundfile.SoundFile(str(path)) as handle:
            rate, frames = handle.samplerate, handle.frames
            need = math.ceil(self.segment * rate / self.sample_rate) + (
                0 if rate == self.sample_rate else 64)
            start = int(position * max(0, frames - need))
            handle.seek(start)
            data = handle.read(min(need, frames), dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            raise ValueError("no audio samples")
        audio = torch.from_numpy(np.ascontiguousarray(data.T))
        audio = resample(match_channels(audio, self.channels, warn=False), rate,
                         self.sample_rate)[:, : self.segment]
        if audio.shape[-1] < self.segment:
            audio = torch.nn.functional.pad(audio, (0, self.segment - audio.shape[-1]))
        return audio
