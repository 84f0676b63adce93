"""Folders of audio to token files (latent files for a continuous codec) and back (what
``mmdtok encode`` and ``decode`` do): resumable, atomic, per-file errors collected,
sharded across torch.distributed ranks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmdtok.atomic import check_writable, write_error
from mmdtok.audio import is_audio_file, load_audio, read_tags, write_audio
from mmdtok.distributed import rank, world_size
from mmdtok.models import ChunkSettings, CodecModel, decode_many, encode_many
from mmdtok.paths import find_files, find_inputs
from mmdtok.persistence import bundled_codes_fingerprints
from mmdtok.tokens import (
    LATENT_FORMAT,
    LATENT_SUFFIX,
    SUFFIX,
    CodecMismatchError,
    check_same_codec,
    is_encoded_file,
    is_token_file,
    load_encoded,
    read_metadata,
    save_encoded,
    token_file,
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
         accept: Callable[[Path], bool], suffix: str, split: str | None = None,
         manifests: bool = False, kind: str = "file to take") -> list[Task]:
    """Tasks for files and folders (searched recursively, their tree mirrored under
    ``out``); a file given directly lands in ``out`` under its own name. With
    ``manifests``, a manifest (.jsonl) stands for its entries (of ``split`` when given),
    mirrored from the folder that holds them all. ValueError for a missing path, or when
    two inputs would write the same target, or an input with nothing to take (``kind``
    names what is taken)."""
    found = (find_inputs(paths, accept, split, kind) if manifests
             else find_files(list(paths), accept, kind))
    tasks = [Task(f.path, Path(out) / f.relative.with_suffix(suffix)) for f in found]
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


# How an existing output relates to this run: made by it (same codec and settings),
# by another codec or settings (replaced only with overwrite), or not by mmdtok at all
# (never replaced: it may be one of the user's originals).
SAME, OTHER, FOREIGN = "same", "other", "foreign"
Verdict = Callable[[Path], tuple[str, str]]


class OutputConflict(ValueError):
    """Outputs exist that this run would not make as they are; raised before any work."""


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` if needed and check that files can be written into it; ValueError
    with the reason otherwise (a file in its place, no permission, a read-only or full
    disk), before any work is done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is a file: give a folder with -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out)
    except OSError as error:
        raise ValueError(f"cannot write into the output folder {out}: "
                         f"{error.strerror or error}") from error
    return out


def _skip_existing(tasks: Sequence[Task], overwrite: bool, report: Report,
                   progress: Progress, verdict: Verdict) -> list[Task]:
    """The tasks to run. An existing target made by this run is skipped (replaced with
    ``overwrite``); one made by another codec or settings, or not by mmdtok, stops the
    whole run before any work (:class:`OutputConflict`): keeping it would report
    success for files this run did not make."""
    todo, keep, conflicts = [], [], []
    for task in tasks:
        if not task.target.exists():
            todo.append(task)
            continue
        kind, why = verdict(task.target)
        if kind == FOREIGN or (kind == OTHER and not overwrite):
            conflicts.append((kind, task.target, why))
        elif overwrite:
            todo.append(task)
        else:
            keep.append(task)
    if conflicts:
        kind, target, why = next((c for c in conflicts if c[0] == FOREIGN), conflicts[0])
        advice = ("mmdtok replaces only files it wrote itself: choose another output "
                  "folder" if kind == FOREIGN else "pass --overwrite to replace them, or "
                  "choose another output folder")
        raise OutputConflict(f"{len(conflicts)} output file(s) already exist that this run "
                             f"would not make, e.g. {target}: {why}; {advice}")
    for task in keep:
        report.skipped.append(task.target)
        progress(task, "skipped")
    return todo


def _token_verdict(expected: dict[str, str], describe: Callable[[dict[str, str]], str]
                   ) -> Verdict:
    """An existing token (or latent) file is this run's when its metadata holds the
    ``expected`` values (the codec's weights, the number of codebooks or the dtype);
    ``describe`` puts a file's metadata in words."""
    def verdict(path: Path) -> tuple[str, str]:
        try:
            meta = read_metadata(path)
        except ValueError as error:
            return OTHER, str(error)
        if all(meta.get(key) == value for key, value in expected.items()):
            return SAME, ""
        return OTHER, f"it holds {describe(meta)}, this run writes {describe(expected)}"
    return verdict


def _describe_codes(meta: dict[str, str]) -> str:
    codec = f" of codec {meta['codec']}" if "codec" in meta else ""
    return f"{meta.get('num_codebooks')} codebooks{codec} (weights {meta.get('codec_fingerprint')})"


def _describe_latents(meta: dict[str, str]) -> str:
    what = (f"{meta.get('dtype')} latents" if meta.get("format") == LATENT_FORMAT
            else f"no latents (format {meta.get('format')})")
    codec = f" of codec {meta['codec']}" if "codec" in meta else ""
    return f"{what}{codec} (weights {meta.get('codec_fingerprint')})"


def encoded_suffix(codec: CodecModel) -> str:
    """The suffix of what ``codec`` encodes to: ``.mmdlat`` (latents) or ``.mmdtok``."""
    return LATENT_SUFFIX if codec.continuous else SUFFIX


_DECODED_MARK = "mmdtok decode"


def _decoded_tags(codec: CodecModel, fingerprint: str) -> dict[str, str]:
    return {"comment": f"{_DECODED_MARK}: codec {codec.config.name} weights {fingerprint}"}


def _audio_verdict(fingerprint: str) -> Verdict:
    def verdict(path: Path) -> tuple[str, str]:
        comment = read_tags(path).get("comment", "")
        if not comment.startswith(_DECODED_MARK):
            return FOREIGN, "it was not decoded by mmdtok (it may be an original)"
        if comment.endswith(f"weights {fingerprint}"):
            return SAME, ""
        return OTHER, f"it was decoded with other weights ({comment})"
    return verdict


def encode_files(codec: CodecModel, tasks: Sequence[Task], *, n_q: int | None = None,
                 batch_size: int = 8, overwrite: bool = False,
                 settings: ChunkSettings | None = None, dtype: str = "float16",
                 progress: Progress = lambda task, status: None) -> Report:
    """Encode each task's audio file to a token file (a latent file stored as ``dtype``
    for a continuous codec); files already encoded are skipped unless ``overwrite``. A
    file that fails is reported and the others go on."""
    n_q = codec.quantizer.resolve_n_q(n_q)  # refused before any work
    report, fingerprint = Report(), codec.fingerprint()
    codes_fingerprint = codec.codes_fingerprint()
    device = next(codec.parameters()).device
    if codec.continuous:
        verdict = _token_verdict({"codec_fingerprint": fingerprint, "format": LATENT_FORMAT,
                                  "dtype": dtype}, _describe_latents)
    else:
        verdict = _token_verdict({"codec_fingerprint": fingerprint,
                                  "num_codebooks": str(n_q)},
                                 _describe_codes)
    todo = _skip_existing(tasks, overwrite, report, progress, verdict)
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
            try:
                tokens = token_file(codec, code, audio.shape[-1], source=task.source.name,
                                    source_sample_rate=source_rate, fingerprint=fingerprint,
                                    codes_fingerprint=codes_fingerprint, dtype=dtype)
            except ValueError as error:  # e.g. latents beyond the float16 range
                report.failed.append((task.source, str(error)))
                progress(task, "failed")
                continue
            try:
                save_encoded(task.target, tokens)  # never a partial file, even on a full disk
            except OSError as error:
                report.failed.append((task.source, write_error(error, task.target)))
                progress(task, "failed")
                continue
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
    """Decode each task's token (or latent) file to an audio file at the codec's sample
    rate."""
    report, fingerprint = Report(), codec.fingerprint()
    codes_fingerprint = codec.codes_fingerprint()
    device = next(codec.parameters()).device
    tags = _decoded_tags(codec, fingerprint)
    for task in _skip_existing(tasks, overwrite, report, progress, _audio_verdict(fingerprint)):
        try:
            tokens = load_encoded(task.source)
            check_same_codec(tokens, codec.config.name, fingerprint, where=str(task.source),
                             codes_fingerprint=codes_fingerprint,
                             shipped=bundled_codes_fingerprints)
            audio = decode_many(codec, [tokens.tensor.to(device)], [tokens.length],
                                settings)[0]
        except (ValueError, OSError, RuntimeError) as error:
            if isinstance(error, CodecMismatchError):
                report.other_codecs.add(error.origin)
            report.failed.append((task.source, str(error)))
            progress(task, "failed")
            continue
        try:
            write_audio(task.target, audio.cpu(), codec.sample_rate, tags)
        except OSError as error:  # never a partial file, even on a full disk
            report.failed.append((task.source, write_error(error, task.target)))
            progress(task, "failed")
            continue
        report.written.append(task.target)
        progress(task, "written")
    return report


__all__ = ["OutputConflict", "Report", "Task", "check_output_folder", "decode_files",
           "encode_files", "encoded_suffix", "is_audio_file", "is_encoded_file",
           "is_token_file", "plan", "shard"]
