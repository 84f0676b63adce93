"""Folders of audio to token files and back (what ``mmdtok encode`` and ``decode`` do):
resumable, atomic, per-file errors collected, sharded across torch.distributed ranks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmdtok.audio import is_audio_file, load_audio, write_audio
from mmdtok.distributed import rank, world_size
from mmdtok.models import ChunkSettings, CodecModel, decode_many, encode_many
from mmdtok.paths import find_files
from mmdtok.persistence import token_file
from mmdtok.tokens import (
    CodecMismatchError,
    check_same_codec,
    is_token_file,
    load_tokens,
    save_tokens,
)


@dataclass(frozen=True)
class Task:
    """One input file and the file it becomes."""

    source: Path
    target: Path


@dataclass
class Report:
    """What a run did: files written, skipped (already there), failed (with reasons);
    ``other_codecs``: origins of the codecs that encoded token files refused for being
    another codec's."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    other_codecs: set[str] = field(default_factory=set)


Progress = Callable[[Task, str], None]


def plan(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
         accept: Callable[[Path], bool], suffix: str) -> list[Task]:
    """Tasks for files and folders (searched recursively, their tree mirrored under
    ``out``); a file given directly lands in ``out`` under its own name. ValueError for
    a missing path, or when two inputs would write the same target."""
    tasks = [Task(f.path, Path(out) / f.relative.with_suffix(suffix))
             for f in find_files(paths, accept)]
    seen: dict[Path, Path] = {}
    for task in tasks:
        if task.target in seen:
            raise ValueError(f"{seen[task.target]} and {task.source} would both be written to "
                             f"{task.target}; encode them to different output folders")
        seen[task.target] = task.source
    return tasks


def shard(tasks: Sequence[Task]) -> list[Task]:
    """This rank's share of the tasks under torch.distributed (all of them otherwise)."""
    return list(tasks[rank()::world_size()])


def _batches(tasks: Sequence[Task], size: int) -> Iterable[list[Task]]:
    for start in range(0, len(tasks), size):
        yield list(tasks[start : start + size])


def _skip_existing(tasks: Sequence[Task], overwrite: bool, report: Report,
                   progress: Progress) -> list[Task]:
    todo = []
    for task in tasks:
        if task.target.exists() and not overwrite:
            report.skipped.append(task.target)
            progress(task, "skipped")
        else:
            todo.append(task)
    return todo


def encode_files(codec: CodecModel, tasks: Sequence[Task], *, n_q: int | None = None,
                 batch_size: int = 8, overwrite: bool = False,
                 settings: ChunkSettings | None = None,
                 progress: Progress = lambda task, status: None) -> Report:
    """Encode each task's audio file to a token file; files already encoded are skipped
    unless ``overwrite``. A file that fails is reported and the others go on."""
    report, fingerprint = Report(), codec.fingerprint()
    device = next(codec.parameters()).device
    todo = _skip_existing(tasks, overwrite, report, progress)
    for batch in _batches(todo, batch_size):
        loaded = []
        for task in batch:
            try:
                audio, source_rate = load_audio(task.source, codec.sample_rate, codec.channels)
                loaded.append((task, audio, source_rate))
            except (ValueError, OSError) as error:
                report.failed.append((task.source, str(error)))
                progress(task, "failed")
        encode = lambda items: encode_many(
            codec, [audio.to(device) for _, audio, _ in items], n_q, settings)
        for (task, audio, source_rate), code in _isolate_failures(encode, loaded, report,
                                                                   progress):
            tokens = token_file(codec, code, audio.shape[-1], source=task.source.name,
                                source_sample_rate=source_rate, fingerprint=fingerprint)
            save_tokens(task.target, tokens)
            report.written.append(task.target)
            progress(task, "written")
    return report


def _isolate_failures(run: Callable[[list], list], items: list, report: Report,
                      progress: Progress) -> list[tuple]:
    """``zip(items, run(items))``; if the batch fails, each item is run alone so that one
    bad input fails alone (reported) and the others go on."""
    try:
        return list(zip(items, run(items)))
    except (RuntimeError, ValueError) as error:
        if len(items) == 1:
            task = items[0][0]
            report.failed.append((task.source, str(error)))
            progress(task, "failed")
            return []
    return [pair for item in items for pair in _isolate_failures(run, [item], report, progress)]


def decode_files(codec: CodecModel, tasks: Sequence[Task], *, overwrite: bool = False,
                 settings: ChunkSettings | None = None,
                 progress: Progress = lambda task, status: None) -> Report:
    """Decode each task's token file to an audio file at the codec's sample rate."""
    report, fingerprint = Report(), codec.fingerprint()
    device = next(codec.parameters()).device
    for task in _skip_existing(tasks, overwrite, report, progress):
        try:
            tokens = load_tokens(task.source)
            check_same_codec(tokens, codec.config.name, fingerprint, where=str(task.source))
            audio = decode_many(codec, [tokens.codes.to(device)], [tokens.length],
                                settings)[0]
            write_audio(task.target, audio.cpu(), codec.sample_rate)
        except (ValueError, OSError, RuntimeError) as error:
            if isinstance(error, CodecMismatchError):
                report.other_codecs.add(error.origin)
            report.failed.append((task.source, str(error)))
            progress(task, "failed")
            continue
        report.written.append(task.target)
        progress(task, "written")
    return report


__all__ = ["Report", "Task", "decode_files", "encode_files", "is_audio_file", "is_token_file",
           "plan", "shard"]
