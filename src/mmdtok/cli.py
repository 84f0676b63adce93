"""The ``mmdtok`` command line: a thin layer that parses, calls the Python API, prints.

User mistakes end with a one-line message on stderr and exit code 2; files that fail
during a run are listed at the end and the exit code is 1.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

import mmdtok

app = typer.Typer(
    name="mmdtok",
    help="Audio tokenizers for music language models: quantizers, an independence loss, "
         "codecs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: [onnx], [B, K, T] are shown as written
)

ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model folder, Hugging Face Hub repository id (owner/name), in "
    "mmdtok's format, EnCodec's (e.g. facebook/encodec_32khz) or DAC's "
    "(descript/dac_44khz), or a codec shipped with "
    "mmdtok (mmdtok:small-music). Default: mmdtok:small-music.")]
RevisionOption = Annotated[str | None, typer.Option(
    help="Hub revision (branch, tag or commit) of --model.")]
DeviceOption = Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1, ...")]
OverwriteOption = Annotated[bool, typer.Option(
    "--overwrite", help="Rewrite outputs that exist (default: skip them, so that an "
    "interrupted run resumes).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.callback()
def _root() -> None:
    """Audio tokenizers for music language models."""


@app.command()
def version() -> None:
    """Print the versions of mmdtok, PyTorch and Python."""
    import torch

    typer.echo(f"mmdtok {mmdtok.__version__}")
    typer.echo(f"torch {torch.__version__}")
    typer.echo(f"python {platform.python_version()}")


def _device(name: str):
    """The torch device ``name``, checked before any work (a user error otherwise)."""
    from mmdtok.distributed import checked_device

    try:
        return checked_device(name)
    except ValueError as error:
        raise fail(f"--device {name}: {error}") from None


def _load_codec(model: str | None, revision: str | None, device: str):
    """``mmdtok.persistence.load_codec`` on ``device``, its errors as user errors."""
    from mmdtok.persistence import is_bundled_name, load_codec

    if revision is not None and is_bundled_name(model):
        raise fail(f"--revision applies to Hub repositories, not to "
                   f"{model or 'the default codec'}")
    target = _device(device)
    try:
        return load_codec(model, revision).to(target)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise fail(str(error)) from error


def _codec_source(model: str | None, revision: str | None) -> str:
    """Where ``--model`` (or a token file's origin) loads a codec from, in words."""
    from mmdtok.hub import is_hub_id, offline_mode
    from mmdtok.persistence import is_bundled_name

    if is_bundled_name(model):
        return f"{model or 'mmdtok:small-music'} (shipped in the package)"
    if Path(model).expanduser().is_dir():
        return f"the folder {Path(model).expanduser().resolve()}"
    if not is_hub_id(model):
        return f"the folder {Path(model).expanduser()}, which does not exist"
    cache = "the local Hugging Face cache only (offline)" if offline_mode() else (
        "the Hugging Face Hub (or its local cache)")
    return f"{model} at revision {revision or 'main'} from {cache}"


def _output_folder(out: Path) -> None:
    from mmdtok.folders import check_output_folder

    try:
        check_output_folder(out)
    except ValueError as error:
        raise fail(str(error)) from error


@contextmanager
def _distributed(backend: str = "gloo") -> Iterator[None]:
    """Under torchrun (WORLD_SIZE > 1), join the process group (each rank takes its share
    of the files, or of the training batch)."""
    import torch.distributed as dist

    started = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group(backend)
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One run at a time writes into ``out`` (``mmdtok.locks``). Under torchrun, rank 0
    takes the lock for the whole job and keeps it until every rank is done; a refusal is a
    user error on every rank."""
    import contextlib

    import torch.distributed as dist

    from mmdtok.locks import FolderInUse, folder_lock

    shared = dist.is_initialized() and dist.get_world_size() > 1
    with contextlib.ExitStack() as held:
        refusal = None
        if not shared or dist.get_rank() == 0:
            try:
                held.enter_context(folder_lock(out))
            except FolderInUse as error:
                refusal = str(error)
        if shared:
            box = [refusal]
            dist.broadcast_object_list(box, src=0)
            refusal = box[0]
        if refusal is not None:
            raise fail(refusal)
        yield
        if shared:
            dist.barrier()


_RESUME_FILES = ("finished files are kept and no partial file is left; run the same "
                 "command again to resume")


@contextmanager
def _interruptible(hint: str = _RESUME_FILES) -> Iterator[None]:
    """Ctrl-C ends with exit code 130 and says what is on disk and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: {hint}", err=True)
        raise typer.Exit(130) from None


@contextmanager
def _progress(total: int, label: str, enabled: bool = True,
              log_every: float = 60.0) -> Iterator:
    """A progress bar on a terminal; elsewhere (a log file, a batch job) one plain line at
    most every ``log_every`` seconds and at the end. The callback takes (task, status,
    text to show, and optionally ``done``: how many are done in all, which a resumed run
    starts beyond 0)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    terminal = sys.stderr.isatty()
    columns = ("[progress.description]{task.description}", BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn(), "{task.fields[info]}")
    with Progress(*columns, transient=False, disable=not (enabled and terminal)) as bar:
        task_id = bar.add_task(label, total=total, info="")
        lines = _ProgressLines(total, label, log_every) if enabled and not terminal else None

        def advance(task, status, info: str | None = None, done: int | None = None) -> None:
            extra = {"info": info} if info is not None else {}
            if done is None:
                bar.update(task_id, advance=1, **extra)
            else:
                bar.update(task_id, completed=done, **extra)
            if lines is not None:
                lines.advance(info, done)

        yield advance


class _ProgressLines:
    """Progress as plain lines on standard error: done/total, rate, time left, info."""

    def __init__(self, total: int, label: str, every: float) -> None:
        self.total, self.label, self.every = total, label, every
        self.done, self.info = 0, ""
        self.first: int | None = None  # done before the first call (a resumed run's steps)
        self.start = self.last = time.monotonic()

    def advance(self, info: str | None, done: int | None = None) -> None:
        if self.first is None:
            self.first = self.done if done is None else done - 1
        self.done = self.done + 1 if done is None else done
        self.info = self.info if info is None else info
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = (now - self.start) / max(1, self.done - self.first)
            left = _duration(rate * (self.total - self.done))
            typer.echo(f"{self.label}: {self.done}/{self.total} ({rate:.3g} s each, "
                       f"{left} left){'  ' + self.info if self.info else ''}", err=True)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{seconds / 60:.1f}m"


def _finish(report, verb: str) -> None:
    typer.echo(f"{len(report.written)} {verb}, {len(report.skipped)} skipped (already "
               f"there), {len(report.failed)} failed", err=True)
    for source, reason in report.failed:
        typer.echo(f"  failed: {source}: {reason}", err=True)
    for origin in sorted(report.other_codecs):
        typer.echo(f"  files encoded by another codec: decode them with --model "
                   f"{origin or '<the encoding codec>'}", err=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def encode(
    paths: Annotated[list[Path], typer.Argument(
        help="Audio files (wav, flac, ogg, mp3), folders (searched recursively) and "
             "manifests (.jsonl with 'path', as the recipes of examples/datasets write).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; folders given "
                                      "as input have their tree mirrored under it, "
                                      "manifests that of the folder holding their files.")],
    model: ModelOption = None,
    revision: RevisionOption = None,
    split: Annotated[str | None, typer.Option(
        help="Only the manifest entries of this split (e.g. train).")] = None,
    n_q: Annotated[int | None, typer.Option(
        "--n-q", help="Keep the first N codebooks (a lower bitrate); default all.")] = None,
    latent_dtype: Annotated[str, typer.Option(
        help="Storage of a continuous codec's latents: float16 or float32.")] = "float16",
    device: DeviceOption = "cpu",
    batch_size: Annotated[int, typer.Option(help="Files encoded together.", min=1)] = 8,
    overwrite: OverwriteOption = False,
) -> None:
    """Encode audio to token files (.mmdtok), or to latent files (.mmdlat) with a codec
    whose bottleneck is continuous (a VAE): resampled to the codec's rate, long files in
    bounded memory, resumable. Under torchrun the files are shared across ranks."""
    from mmdtok.audio import is_audio_file
    from mmdtok.folders import Task, encode_files, encoded_suffix, plan, shard
    from mmdtok.tokens import LATENT_DTYPES, SUFFIX

    if latent_dtype not in LATENT_DTYPES:
        raise fail(f"--latent-dtype must be float16 or float32, got {latent_dtype!r}")
    try:
        tasks = plan(paths, out, accept=is_audio_file, suffix=SUFFIX, split=split,
                     manifests=True, kind="audio file (wav, flac, ogg, mp3)")
    except ValueError as error:
        raise fail(str(error)) from error
    _output_folder(out)
    codec = _load_codec(model, revision, device)
    n_q = _n_q(codec, n_q)
    suffix = encoded_suffix(codec)
    tasks = [Task(t.source, t.target.with_suffix(suffix)) for t in tasks]
    with _interruptible(), _distributed(), _locked(out):
        tasks = shard(tasks)
        with _progress(len(tasks), "encoding") as progress:
            report = _run(encode_files, codec, tasks, n_q=n_q, batch_size=batch_size,
                          overwrite=overwrite, dtype=latent_dtype, progress=progress)
    _finish(report, "encoded")


def _n_q(codec, n_q: int | None) -> int:
    """--n-q by the codec's own rule (``Quantizer.resolve_n_q``); a refusal becomes a user
    error in the option's words."""
    try:
        return codec.quantizer.resolve_n_q(n_q)
    except ValueError:
        if codec.continuous:
            raise fail(f"--n-q applies to codebooks; {codec.config.name} has a continuous "
                       "latent (no codebooks to keep a prefix of): leave --n-q out") from None
        valid = codec.quantizer.prefixes()
        raise fail(f"--n-q must be in {valid[0]}..{valid[-1]}, got {n_q}") from None


def _run(work, *args, **options):
    """``encode_files`` or ``decode_files``; outputs that this run must not keep or
    replace stop it before any work, as a user error."""
    from mmdtok.folders import OutputConflict

    try:
        return work(*args, **options)
    except OutputConflict as error:
        raise fail(str(error)) from error


@app.command()
def decode(
    tokens: Annotated[list[Path], typer.Argument(
        help="Token files (.mmdtok), latent files (.mmdlat) and folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: ModelOption = None,
    revision: RevisionOption = None,
    audio_format: Annotated[str, typer.Option(
        "--format", help="Output file type: wav, flac or ogg.")] = "wav",
    device: DeviceOption = "cpu",
    overwrite: OverwriteOption = False,
) -> None:
    """Decode token files (or latent files) back to audio at the codec's sample rate.
    Without --model, the codec recorded in the first file (its folder or Hub commit) is
    used; codes or latents made by another codec are refused."""
    from mmdtok.folders import decode_files, plan
    from mmdtok.persistence import parse_origin
    from mmdtok.tokens import is_encoded_file

    if audio_format not in {"wav", "flac", "ogg"}:
        raise fail(f"--format must be wav, flac or ogg, got {audio_format!r}")
    recorded = model is None
    try:
        tasks = plan(tokens, out, accept=is_encoded_file, suffix=f".{audio_format}",
                     kind="token file (.mmdtok) or latent file (.mmdlat)")
        if recorded and tasks:
            model, revision = parse_origin(_first_origin(tasks))
    except ValueError as error:
        raise fail(str(error)) from error
    _output_folder(out)
    typer.echo(f"codec: {_codec_source(model, revision)}"
               + (", as recorded in the token files" if recorded and tasks else ""), err=True)
    codec = _load_codec(model, revision, device)
    with _interruptible(), _locked(out), _progress(len(tasks), "decoding") as progress:
        report = _run(decode_files, codec, tasks, overwrite=overwrite, progress=progress)
    _finish(report, "decoded")


def _first_origin(tasks) -> str:
    """The codec recorded in the first token file that can be read: an unreadable one is
    reported with the others by the decoding, it does not stop the folder."""
    from mmdtok.tokens import read_metadata

    first_error = None
    for task in tasks:
        try:
            return read_metadata(task.source).get("codec_origin", "")
        except (ValueError, OSError) as error:
            first_error = first_error or error
    raise ValueError(f"no token file could be read, so no codec is known: {first_error}")


@app.command("train-codec")
def train_codec(
    data: Annotated[list[str], typer.Argument(
        help="Folders of audio (searched recursively) or manifests (.jsonl with 'path' and "
             "'split'), then key=value settings over the --config file, e.g. steps=5000 "
             "independence=true tensorboard=true.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory: the trained codec "
                                      "(usable as --model), its settings, checkpoints, "
                                      "validation results and logs.")],
    config: Annotated[Path | None, typer.Option(
        help="Settings file (JSON, or YAML with PyYAML); see mmdtok.train.TrainConfig.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    max_steps: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many steps (the schedule still spans 'steps'; "
                    "--resume goes on).")] = None,
) -> None:
    """Train a codec (EnCodec losses, optional independence loss) on your audio. Under
    torchrun every rank trains on its own batches with DDP (batch_size is per rank)."""
    from mmdtok.distributed import rank
    from mmdtok.train.config import load_config
    from mmdtok.train.folder import RunFolder
    from mmdtok.train.loop import train
    from mmdtok.train.parallel import process_group_backend, training_device

    paths = [Path(item) for item in data if "=" not in item]
    settings = [item for item in data if "=" in item]
    if RunFolder(out).has_checkpoint() != resume:
        raise fail(f"{out} already holds a run: pass --resume to continue it" if not resume
                   else f"nothing to resume: {RunFolder(out).checkpoint} does not exist")
    try:
        cfg = load_config(config).with_overrides(settings)
        device = training_device(cfg.device)
        _output_folder(out)
        hint = (f"the last checkpoint in {out} is kept; add --resume to the same command "
                "to go on from it")
        with _interruptible(hint), _distributed(process_group_backend(device)), _locked(out):
            main_rank = rank() == 0
            with _progress(min(cfg.steps, max_steps or cfg.steps), "training",
                           enabled=main_rank) as progress:
                run = train(cfg, paths, out, resume=resume, max_steps=max_steps,
                            device=device, progress=lambda step, values: progress(
                                None, "step", _loss_summary(values), step))
    except ValueError as error:
        raise fail(str(error)) from error
    if main_rank and run.step >= cfg.steps:
        typer.echo(f"trained to step {run.step} ({run.skipped} skipped); codec in {out}",
                   err=True)
    elif main_rank:
        typer.echo(f"stopped at step {run.step} of {cfg.steps} ({run.skipped} skipped); "
                   f"the codec so far and a checkpoint in {out}: pass --resume to go on",
                   err=True)


def _loss_summary(values: dict[str, float]) -> str | None:
    """The main losses for the progress bar (None keeps the last ones: skipped step)."""
    shown = [f"{k} {values[k]:.3g}" for k in ("mel", "l1", "independence") if k in values]
    return "  ".join(shown) or None


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(
        help="Token files (.mmdtok) or latent files (.mmdlat), and folders.")],
    pattern: Annotated[str, typer.Option(
        help="Steps compared: 'delay' (codebook k at frame t - k, what a delay-pattern LM "
             "predicts together) or 'parallel' (one frame).")] = "delay",
    plot: Annotated[Path | None, typer.Option(
        help="Also write a heatmap PNG of the normalized pairwise mutual information "
             "(needs matplotlib; token files).")] = None,
    groups: Annotated[int | None, typer.Option(
        help="Latent files: the channel groups compared (default: the codec's, as "
             "recorded).", min=2)] = None,
) -> None:
    """How the codebooks of token files are used and how dependent they are: per-codebook
    entropy, perplexity and utilization; pairwise mutual information (Miller-Madow
    corrected), normalized total correlation and the paper's pairwise dependence. For
    latent files: the independence loss between channel groups next to its value for
    shuffled (independent) groups, and the largest correlation between groups."""
    from mmdtok.inspection import (
        check_plot_path,
        inspect_token_files,
        plot_mutual_information,
    )
    from mmdtok.paths import find_files
    from mmdtok.tokens import is_latent_file, is_token_file

    try:
        found = find_files(paths, lambda p: is_token_file(p) or is_latent_file(p),
                           "token file (.mmdtok) or latent file (.mmdlat)")
        latent = [f.path for f in found if is_latent_file(f.path)]
        tokens = [f.path for f in found if not is_latent_file(f.path)]
        if latent and tokens:
            raise fail(f"{tokens[0]} holds codes and {latent[0]} latents: inspect token "
                       "files and latent files in separate runs")
        if latent:
            if plot is not None:
                raise fail("--plot draws the mutual information between codebooks, which "
                           "latent files do not have: leave --plot out")
            return _inspect_latents(paths, pattern, groups)
        if groups is not None:
            raise fail("--groups applies to latent files (.mmdlat); token files compare "
                       "their codebooks: leave --groups out")
        if plot is not None:
            check_plot_path(plot)
        result = inspect_token_files(paths, pattern)
        if plot is not None:
            plot = plot_mutual_information(result, plot)
    except ValueError as error:
        raise fail(str(error)) from error
    _print_inspection(result)
    cells = result.codebook_size ** 2
    if result.report.rows < 10 * cells:
        typer.echo(f"warning: {result.report.rows:,} steps for {cells:,} joint cells of a "
                   "pair: mutual information and total correlation are biased upwards even "
                   "after the correction; compare codecs at equal step counts", err=True)
    if plot is not None:
        typer.echo(f"heatmap written to {plot}", err=True)


def _inspect_latents(paths: list[Path], pattern: str, groups: int | None) -> None:
    from mmdtok.inspection import inspect_latent_files

    result = inspect_latent_files(paths, pattern, groups)
    _print_rows([("codec", result.codec),
                 ("files", f"{result.files} ({result.frames:,} frames, {result.windows:,} "
                           "windows of 64)"),
                 ("groups", f"{result.groups} of {result.latent_dim // result.groups} "
                            f"channels ({result.pattern} pattern)"),
                 ("independence loss", f"{result.independence:.3e} (shuffled groups: "
                                       f"{result.shuffled:.3e})")])
    typer.echo("\nlargest |correlation| between a channel of one group and one of another")
    typer.echo("      " + "".join(f"{j:>8}" for j in range(result.groups)))
    for i, row in enumerate(result.correlation.tolist()):
        typer.echo(f"{i:>6}" + "".join(f"{value:>8.4f}" for value in row))


def _print_inspection(result) -> None:
    report, usage = result.report, result.report.usage
    _print_rows([("codec", result.codec), ("files", f"{result.files} ({result.frames:,} "
                 "frames)"), ("steps compared", f"{report.rows:,} ({report.pattern} pattern)"),
                 ("total correlation", f"{report.total_correlation:.4f} nats, normalized "
                  f"{report.normalized_total_correlation:.4f}"),
                 ("pairwise dependence", f"{report.pairwise_dependence:.4f} (the paper's "
                  "normalized form, mean over pairs)")])
    typer.echo("\ncodebook  entropy (nats)  perplexity  utilization")
    for k in range(len(usage.entropy)):
        typer.echo(f"{k:>8}  {float(usage.entropy[k]):>14.3f}  "
                   f"{float(usage.perplexity[k]):>10.1f}  {float(usage.utilization[k]):>10.1%}")
    typer.echo("\nnormalized mutual information I / sqrt(H_a H_b)")
    table = report.normalized_mutual_information
    typer.echo("      " + "".join(f"{j:>8}" for j in range(len(table))))
    for i, row in enumerate(table.tolist()):
        typer.echo(f"{i:>6}" + "".join(f"{value:>8.4f}" for value in row))


@app.command()
def evaluate(
    paths: Annotated[list[Path], typer.Argument(
        help="Reference audio files, folders (searched recursively) and manifests (.jsonl "
             "with 'path', as the recipes of examples/datasets write).")],
    model: ModelOption = None,
    revision: RevisionOption = None,
    split: Annotated[str | None, typer.Option(
        help="Only the manifest entries of this split (e.g. test); files and folders "
             "named directly are all taken.")] = None,
    n_q: Annotated[list[int] | None, typer.Option(
        "--n-q", help="Codebooks kept (a bitrate); repeat for several. Default: every "
                      "prefix 1..K.")] = None,
    baseline: Annotated[str, typer.Option(
        help="Classical codecs on the same references, KIND:KBPS[,KBPS...] (opus through "
             "opusenc/opusdec, mp3 through ffmpeg), space-separated; '' for none.")
    ] = "opus:6,12",
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write every score (per file and summary) to this JSON file.")
    ] = None,
    no_visqol: Annotated[bool, typer.Option(
        "--no-visqol", help="Skip ViSQOL (the slowest metric).")] = False,
    seconds: Annotated[float | None, typer.Option(
        help="Score an excerpt this long from the middle of each file (faster).")] = None,
    device: DeviceOption = "cpu",
) -> None:
    """Reconstruction quality of a codec on reference audio, per bitrate, next to
    classical codecs: SI-SDR, mel distance, multi-resolution STFT distance and ViSQOL v3
    (audio mode, with mmdtok[evaluate]); the mean and standard deviation over files."""
    import json

    from mmdtok.atomic import atomic_path, check_output_file
    from mmdtok.evaluation import evaluate as run_evaluation
    from mmdtok.evaluation import parse_baselines, reference_files

    try:
        baselines = parse_baselines(baseline)
        files = reference_files(paths, split)
        if json_out is not None:
            _not_an_input(json_out, files, "--json")
            check_output_file(json_out)
    except ValueError as error:
        raise fail(str(error)) from error
    codec = _load_codec(model, revision, device)
    n_q = [_n_q(codec, k) for k in n_q] if n_q else None
    with _interruptible("nothing is written until every file is scored"), _progress(
            len(files), "evaluating") as progress:
        try:
            # the files of the split, resolved above: no split to apply again
            report = run_evaluation(codec, files, n_q=n_q, baselines=baselines,
                                    with_visqol=not no_visqol, name=model or None,
                                    seconds=seconds,
                                    progress=lambda path: progress(None, "done"))
        except ValueError as error:
            raise fail(str(error)) from error
    _print_evaluation(report)
    if json_out is not None:
        with atomic_path(json_out) as temp:
            temp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        typer.echo(f"scores written to {json_out}", err=True)
    for path, reason in report.failed:
        typer.echo(f"  failed: {path}: {reason}", err=True)
    if report.failed:
        raise typer.Exit(1)


def _not_an_input(out: Path, inputs: list[Path], option: str) -> None:
    """ValueError when the output ``out`` is one of the ``inputs`` (it would replace it)."""
    target = out.resolve()
    clash = next((p for p in inputs if Path(p).resolve() == target), None)
    if clash is not None:
        raise ValueError(f"{option} {out} is one of the inputs: it would be replaced; "
                         "give another file name")


def _print_evaluation(report) -> None:
    def cell(summary, digits):
        return "-" if summary is None else (f"{summary['mean']:.{digits}f} ± "
                                            f"{summary['sd']:.{digits}f}")
    files = max((len(r.files) for r in report.rows), default=0)
    typer.echo(f"{files} file(s); mean ± standard deviation over files")
    header = ("system", "kbps", "SI-SDR (dB)", "mel distance", "STFT distance", "ViSQOL")
    lines = [header] + [
        (row.system, f"{row.kbps:.2f}", cell(s["si_sdr"], 2), cell(s["mel_distance"], 3),
         cell(s["stft_distance"], 3), cell(s["visqol"], 2))
        for row in report.rows for s in [row.summary()]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        typer.echo("  ".join(value.ljust(width) for value, width in zip(line, widths)))
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
def info(
    target: Annotated[str, typer.Argument(
        help="A token file, a latent file, a model folder or a Hub id.")],
    revision: RevisionOption = None,
) -> None:
    """Describe a token or latent file (codec, duration, codebooks or latent channels) or
    a model (rates, bitrate, parameters)."""
    from mmdtok.tokens import load_encoded

    path = Path(target)
    try:
        if path.is_file():
            _print_rows(_token_rows(load_encoded(path)))
            return
        _print_rows(_model_rows(_load_codec(target, revision, "cpu")))
    except ValueError as error:
        raise fail(str(error)) from error


@app.command("export-onnx")
def export_onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for encoder.onnx, "
                                      "decoder.onnx and onnx.json (created).")],
    model: ModelOption = None,
    revision: RevisionOption = None,
    n_q: Annotated[int | None, typer.Option(
        "--n-q", help="Codebooks the graphs emit and read (a lower bitrate); default "
                      "all.")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.", min=18)] = 18,
    check: Annotated[bool, typer.Option(
        help="Run both graphs with onnxruntime (when installed) against mmdtok on test "
             "noise and report the match.")] = True,
) -> None:
    """Export a codec to ONNX: encoder.onnx (audio [batch, channels, samples] -> codes
    [batch, n_q, frames]) and decoder.onnx (codes -> audio), batch and length dynamic,
    plus onnx.json (rates, codebooks, the weights' fingerprint, the shortest input).
    Runs without torch in onnxruntime. Needs the onnx extra: pip install "mmdtok[onnx]".
    Tracing takes a while: about 25 s for the shipped codec on a CPU, longer for the
    larger published layouts; each step is printed as it starts and ends."""
    from mmdtok.export import export_onnx as export

    codec = _load_codec(model, revision, "cpu")
    n_q = _n_q(codec, n_q)
    _output_folder(out)
    with _locked(out):
        try:
            result = export(codec, out, n_q, opset=opset, check=check,
                            progress=lambda line: typer.echo(line, err=True))
        except ImportError as error:
            raise fail(str(error)) from error
        except RuntimeError as error:
            raise fail(str(error), code=1) from error
    meta = result.metadata
    content = (f"latent {meta['latent_dim']} channels" if meta["continuous"]
               else f"{meta['n_q']} x {meta['codebook_size']} codes")
    typer.echo(f"exported {meta['codec']} ({content}, {meta['sample_rate']} Hz, "
               f"inputs of at least {meta['min_samples']} samples) to {out}")
    if result.check is None:
        typer.echo("not checked: onnxruntime is not installed" if check else "not checked")
        return
    typer.echo(f"checked with onnxruntime {result.check.onnxruntime}: "
               f"{result.check.codes_equal:.2%} of the codes equal, decoded audio within "
               f"{result.check.audio_max_abs_diff:.1e}")


def _token_rows(tokens) -> list[tuple[str, str]]:
    from mmdtok.tokens import LatentFile

    content = (("latent", f"{tokens.latent_dim} channels ({tokens.dtype})")
               if isinstance(tokens, LatentFile) else
               ("codebooks", f"{tokens.num_codebooks} x {tokens.codebook_size}"))
    return [("codec", tokens.codec), ("codec origin", tokens.codec_origin or "-"),
            ("codec weights", tokens.codec_fingerprint),
            ("codes meaning", tokens.codes_fingerprint or "- (written before it was recorded)"),
            content,
            ("frames", f"{tokens.num_frames} at {tokens.frame_rate:g} Hz"),
            ("duration", (f"{tokens.duration:.2f} s ({tokens.length} samples at "
                         f"{tokens.sample_rate} Hz, {tokens.channels} channel(s))")),
            ("source", f"{tokens.source or '-'} ({tokens.source_sample_rate} Hz)")]


def _model_rows(codec) -> list[tuple[str, str]]:
    from mmdtok.evaluation import codec_kbps

    kbps = codec_kbps(codec, codec.num_codebooks)
    if codec.continuous:
        content = [("latent", f"{codec.latent_dim} channels, continuous (vae), "
                              f"{codec.num_codebooks} group(s) of "
                              f"{codec.latent_dim // codec.num_codebooks}"),
                   ("latent rate", f"{codec.latent_dim * codec.frame_rate:,.0f} values/s "
                                   f"({kbps:.1f} kbps as float16)")]
    else:
        content = [("codebooks", (f"{codec.num_codebooks} x {codec.codebook_size} "
                                  f"({codec.config.quantizer['kind']})")),
                   ("bitrate", f"{kbps:.2f} kbps")]
    return [("codec", codec.config.name), ("origin", codec.origin or "-"),
            ("weights", codec.fingerprint()), ("codes meaning", codec.codes_fingerprint()),
            ("audio", f"{codec.sample_rate} Hz, {codec.channels} channel(s)"),
            ("frames", f"{codec.frame_rate:g} Hz (hop {codec.hop_length})"), *content,
            ("parameters", f"{sum(p.numel() for p in codec.parameters()) / 1e6:.2f} M")]


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _format_warning  # one line per warning on the command line
    try:
        app()
    except OSError as error:  # what the system refused (a full disk, ...): one line
        from mmdtok.atomic import failure_cause

        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"error: {where}{failure_cause(error)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
