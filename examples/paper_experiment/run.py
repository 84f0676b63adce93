"""The paper's central experiment at CPU scale: does the independence loss shrink what the
fast factorized LM loses against the exact joint one?

    python -m examples.paper_experiment.run data/corpus/manifest.jsonl -o runs/paper --jobs 2

1. The starting codec: by default the shipped ``mmdtok:small-music`` (4 x 1,024 codes;
   trained on the train splits of the rendered and the recorded corpus, so the test split
   here is music it never saw). ``--start-from scratch`` trains a shared codec from
   scratch on the corpus's train split *without* the loss first (``codec_shared.json``).
2. Three arms fine-tune it with the same data, seed and batches (``codec_arm.json``):
   ``none`` (no loss), ``delay`` (the loss on the delayed streams, the paper's best) and
   ``parallel`` (the loss on the aligned streams, the paper's ablation of matching the
   loss to the decoding strategy).
3. Each codec encodes the train and test splits to token files.
4. On the test split (pieces never trained on): SI-SDR and mel distance, and the
   IndependenceLoss of the held-out streams under both patterns, with the estimator the
   arms trained with (random features, median bandwidths) and with the paper's fixed
   bandwidths.
5. The factorization gap of each codec's test tokens under the delay and the parallel
   layouts (``examples.musicgen_lm.gap``: the same temporal LM trained twice on the same
   batches, factorized heads and depth head; held-out NLL difference with a paired
   bootstrap interval), for every LM seed of ``--lm-seeds``; and each loss arm's gap
   minus the gap without the loss, paired over the held-out windows (the same audio).
   ``--flatten`` also trains the flattened LM (K times longer sequences) for each codec,
   as a column.

Every stage writes its JSON under OUT/results/ and is skipped when it is there (rerun to
resume, delete a result to redo it); codec training resumes from its last checkpoint.
``--jobs N`` runs up to N independent stages at once (the three arms, then the gaps), each
in its own process with its share of the CPU threads and its log under OUT/logs/; the
figures do not depend on it beyond floating-point summation order.
Writes OUT/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from examples.musicgen_lm.data import TokenSet, load_token_set, windows
from examples.musicgen_lm.gap import factorization_gap, paired_difference
from examples.musicgen_lm.model import LMConfig, nll_per_frame
from examples.musicgen_lm.train import LMTraining, train_lm
from mmdtok import Codec, IndependenceLoss
from mmdtok.atomic import atomic_path
from mmdtok.folders import Task, encode_files
from mmdtok.losses import PAPER_BANDWIDTHS
from mmdtok.metrics import stream_independence
from mmdtok.persistence import load_codec
from mmdtok.tokens import SUFFIX
from mmdtok.train.config import TrainConfig, load_config
from mmdtok.train.data import find_audio
from mmdtok.train.loop import train
from mmdtok.train.validation import evaluate_codec, load_clips

HERE = Path(__file__).parent
ARMS = {"none": {"independence": False},
        "delay": {"independence": True, "independence_pattern": "delay"},
        "parallel": {"independence": True, "independence_pattern": "parallel"}}
LAYOUTS = ("delay", "parallel")
SCRATCH = "scratch"  # --start-from: train the shared codec here first
DEFAULT_START = "mmdtok:small-music"


def stage(path: Path, compute, *args) -> dict:
    """The JSON result at ``path``, computed (and written) only when missing."""
    if path.exists():
        return json.loads(path.read_text())
    started = time.time()
    result = compute(*args) | {"seconds": round(time.time() - started, 1)}
    with atomic_path(path) as temp:  # never a half-written result
        temp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def codec_config(name: str, out: Path, overrides: list[str], start_from: str) -> TrainConfig:
    """The shared codec's settings, or an arm's: the arm settings, starting from
    ``start_from`` (a codec) or, with ``scratch``, from the shared codec, with the arm's
    loss."""
    if name == "shared":
        return load_config(HERE / "codec_shared.json").with_overrides(overrides)
    arm = load_config(HERE / "codec_arm.json").with_overrides(overrides)
    return replace(arm, **ARMS[name], init_from=starting_codec(out, start_from))


def starting_codec(out: Path, start_from: str) -> str:
    """The codec every arm starts from: the shared codec of the run with ``scratch``."""
    return str(out / "codec-shared") if start_from == SCRATCH else start_from


def train_codec(config: TrainConfig, manifest: Path, run_dir: Path) -> dict:
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    with tqdm(total=config.steps, desc=run_dir.name) as bar:
        run = train(config, [manifest], run_dir, resume=resume,
                    progress=lambda step, values: bar.update(step - bar.n))
        bar.update(run.step - bar.n)  # a finished run resumes at its end
    return {"steps": run.step, "config": config.to_dict()}


def encode_split(codec: Codec, files: list[Path], out: Path) -> None:
    tasks = [Task(f, out / f.with_suffix(SUFFIX).name) for f in files]
    if len({task.target for task in tasks}) < len(tasks):
        raise ValueError(f"two audio files of {out.name} share a name")
    report = encode_files(codec, tasks)  # files already encoded are kept
    if report.failed:
        raise RuntimeError(f"encoding failed: {report.failed[:3]}")


def held_out_losses(streams: torch.Tensor) -> dict:
    """IndependenceLoss of held-out streams [B, K, D, T] under both patterns: the arms'
    estimator (random features, median bandwidths) and the paper's fixed bandwidths."""
    values = {}
    for label, bandwidths in (("median", "median"), ("paper_bandwidths", PAPER_BANDWIDTHS)):
        for pattern in LAYOUTS:
            loss = IndependenceLoss.from_preset("rff", num_features=1024, pattern=pattern,
                                                bandwidths=bandwidths)
            values[f"{label}_{pattern}"] = stream_independence(streams, loss)
    return values


@torch.inference_mode()
def measure_codec(codec: Codec, test_files: list[Path], seconds: float) -> dict:
    clips = load_clips(test_files, codec.sample_rate, codec.channels)
    quality, _ = evaluate_codec(codec, clips)
    samples = round(seconds * codec.frame_rate) * codec.hop_length
    streams = torch.cat([codec.encode_streams(clip[None, :, :samples])
                         for clip in clips if clip.shape[-1] >= samples])
    return {"si_sdr": quality.si_sdr, "mel_distance": quality.mel_distance,
            "perplexities": list(quality.perplexities), "test_seconds": quality.seconds,
            "stream_windows": streams.shape[0], "independence_loss": held_out_losses(streams)}


def flattened_lm(tokens: TokenSet, held_out: TokenSet, config: LMConfig,
                 training: LMTraining) -> dict:
    model, _ = train_lm(config, training, tokens)
    test = windows(held_out, config.frames)
    return {"lm": config.to_dict(), "training": asdict(training),
            "test_nll_per_frame": nll_per_frame(model, test),
            "test_frames": test.shape[0] * test.shape[-1]}


# The stages, each a picklable call that writes its result JSON (and is a no-op when the
# JSON is there), so that a process pool can run the independent ones side by side.

def codec_stage(out: Path, name: str, config: TrainConfig, manifest: Path) -> None:
    stage(out / "results" / f"codec-{name}.json", train_codec, config, manifest,
          out / f"codec-{name}")


def tokens_stage(out: Path, name: str, by_split: dict[str, list[Path]],
                 window_seconds: float) -> None:
    """The codec's token files of both splits and its held-out measures."""
    codec = Codec.from_pretrained(out / f"codec-{name}")
    for split, split_files in by_split.items():
        encode_split(codec, split_files, out / f"tokens-{name}" / split)
    stage(out / "results" / f"quality-{name}.json", measure_codec, codec, by_split["test"],
          window_seconds)


def start_stage(origin: str, out: Path, test_files: list[Path], window_seconds: float
                ) -> None:
    """The held-out measures of the codec every arm starts from."""
    stage(out / "results" / "quality-start.json", lambda: {"codec": origin, **measure_codec(
        load_codec(origin), test_files, window_seconds)})


def _token_sets(out: Path, name: str) -> tuple[TokenSet, TokenSet]:
    return (load_token_set([out / f"tokens-{name}" / "train"]),
            load_token_set([out / f"tokens-{name}" / "test"]))


def gap_stage(out: Path, name: str, layout: str, seed: int, lm_shape: dict, frames: int,
              training: LMTraining) -> None:
    path = out / "results" / f"gap-{name}-{layout}-seed{seed}.json"
    if not path.exists():
        train_set, test_set = _token_sets(out, name)
        config = LMConfig(train_set.num_codebooks, train_set.codebook_size, layout, frames,
                          **lm_shape)
        stage(path, factorization_gap, config, training, train_set, test_set)


def flatten_stage(out: Path, name: str, lm_shape: dict, frames: int,
                  training: LMTraining) -> None:
    path = out / "results" / f"lm-{name}-flatten.json"
    if not path.exists():
        train_set, test_set = _token_sets(out, name)
        config = LMConfig(train_set.num_codebooks, train_set.codebook_size, "flatten",
                          frames, **{k: v for k, v in lm_shape.items() if "depth" not in k})
        stage(path, flattened_lm, train_set, test_set, config, training)


@dataclass(frozen=True)
class Job:
    """One stage: ``call(*args)``, to run once the jobs named in ``after`` are done."""
    name: str
    call: Callable[..., None]
    args: tuple
    after: tuple[str, ...] = ()


def _logged(log: Path, call: Callable[..., None], args: tuple) -> None:
    """Run a job in a worker with its progress bars and messages in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as stream, contextlib.redirect_stderr(stream):
        call(*args)


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(jobs: list[Job], workers: int, logs: Path) -> None:
    """Run ``jobs`` (listed in an order that respects ``after``): one after the other with
    ``workers=1``; else up to ``workers`` at a time in spawned processes, each with its
    share of the CPU threads and its log at ``logs/NAME.log``, a job starting as soon as
    the jobs it needs are done (in the listed order among the ready ones). The first
    failure stops the run once the running jobs end; finished stages stay written."""
    if workers == 1:
        for job in jobs:
            job.call(*job.args)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    done: set[str] = set()
    waiting = list(jobs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_threads, initargs=(threads,)) as pool, \
            tqdm(total=len(jobs), desc=f"stages ({workers} at a time)") as bar:
        running: dict = {}
        while waiting or running:
            for job in [j for j in waiting if set(j.after) <= done]:
                waiting.remove(job)
                future = pool.submit(_logged, logs / f"{job.name}.log", job.call, job.args)
                running[future] = job
            if not running:
                raise ValueError(f"jobs wait on unknown jobs: {[j.name for j in waiting]}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                error = future.exception()
                if error is not None:
                    for other in running:
                        other.cancel()
                    raise RuntimeError(f"stage {job.name} failed (its log: "
                                       f"{logs / (job.name + '.log')})") from error
                done.add(job.name)
                bar.update(1)
                bar.set_postfix_str(job.name)


def plan(args: argparse.Namespace, by_split: dict[str, list[Path]]) -> list[Job]:
    """Every stage of the experiment, each after the stages whose files it reads."""
    out: Path = args.out
    lm_shape = {"dim": args.lm_dim, "layers": args.lm_layers, "heads": args.lm_heads,
                "dropout": args.lm_dropout, "depth_dim": args.depth_dim,
                "depth_layers": args.depth_layers}
    jobs = []
    shared: tuple[str, ...] = ()
    if args.start_from == SCRATCH:
        jobs.append(Job("codec-shared", codec_stage, (
            out, "shared", codec_config("shared", out, args.codec_override, SCRATCH),
            args.manifest)))
        shared = ("codec-shared",)
    jobs.append(Job("quality-start", start_stage,
                    (starting_codec(out, args.start_from), out, by_split["test"],
                     args.window_seconds), shared))
    for name in args.arms:  # every codec first: the longest stages, and the gaps need them
        config = codec_config(name, out, args.codec_override, args.start_from)
        jobs.append(Job(f"codec-{name}", codec_stage, (out, name, config, args.manifest),
                        shared))
    for name in args.arms:
        jobs.append(Job(f"tokens-{name}", tokens_stage,
                        (out, name, by_split, args.window_seconds), (f"codec-{name}",)))
    for name in args.arms:
        for layout in LAYOUTS:
            for seed in args.lm_seeds:
                jobs.append(Job(f"gap-{name}-{layout}-seed{seed}", gap_stage, (
                    out, name, layout, seed, lm_shape, args.lm_frames,
                    lm_training(args, seed)), (f"tokens-{name}",)))
        if args.flatten:
            jobs.append(Job(f"lm-{name}-flatten", flatten_stage, (
                out, name, lm_shape, args.lm_frames, lm_training(args, args.lm_seeds[0])),
                (f"tokens-{name}",)))
    return without_finished_tokens(jobs, out / "results")


def without_finished_tokens(jobs: list[Job], results: Path) -> list[Job]:
    """``jobs`` less the token stages that nothing needs any more: the arm's held-out
    measures and the results of every stage that reads its tokens exist. So a run
    resumes from result files alone (copied from an earlier run) without the codecs that
    made them."""
    def finished(name: str) -> bool:
        return (results / f"{name}.json").exists()

    dropped = {job.name for job in jobs if job.name.startswith("tokens-")
               and finished("quality-" + job.name.removeprefix("tokens-"))
               and all(finished(user.name) for user in jobs if job.name in user.after)}
    return [replace(job, after=tuple(a for a in job.after if a not in dropped))
            for job in jobs if job.name not in dropped]


def summarize(gaps: list[dict]) -> dict:
    """The gap of one codec under one layout over the LM seeds (``window_gaps``: the
    mean over seeds of each held-out window's gap)."""
    values = [g["gap"] for g in gaps]
    per_window = [statistics.mean(c) for c in zip(*(g["window_gaps"] for g in gaps))]
    return {"gap": statistics.mean(values), "window_gaps": per_window,
            "gap_sd": statistics.stdev(values) if len(values) > 1 else None,
            "gap_ci95": gaps[0]["gap_ci95"] if len(gaps) == 1 else None,
            "nll_factorized": statistics.mean(g["nll_factorized"] for g in gaps),
            "nll_joint": statistics.mean(g["nll_joint"] for g in gaps),
            "seeds": len(gaps), "runs": gaps}


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if "none" not in args.arms:
        raise ValueError("--arms needs 'none': every other arm is compared with it")
    files = find_audio([args.manifest])
    by_split = {s: [f.path for f in files if f.split == s] for s in ("train", "test")}
    if not by_split["train"] or not by_split["test"]:
        raise ValueError(f"{args.manifest} needs files in its 'train' and 'test' splits")
    run_jobs(plan(args, by_split), args.jobs, out / "logs")
    results_dir = out / "results"

    def read(name: str) -> dict:
        return json.loads((results_dir / f"{name}.json").read_text())

    results: dict = {}
    for name in args.arms:
        gaps = {layout: summarize([read(f"gap-{name}-{layout}-seed{seed}")
                                   for seed in args.lm_seeds]) for layout in LAYOUTS}
        results[name] = {**read(f"quality-{name}"), "gap": gaps}
        if args.flatten:
            results[name]["flatten"] = read(f"lm-{name}-flatten")
    for name in args.arms[1:]:  # each arm's gap against the arm without the loss
        for layout in LAYOUTS:
            results[name]["gap"][layout]["change_vs_none"] = paired_difference(
                results[name]["gap"][layout]["window_gaps"],
                results["none"]["gap"][layout]["window_gaps"])
    results["start"] = read("quality-start")
    with atomic_path(out / "results.json") as temp:
        temp.write_text(json.dumps(results, indent=2) + "\n")
    return results


def lm_training(args: argparse.Namespace, seed: int) -> LMTraining:
    return LMTraining(steps=args.lm_steps, batch_size=args.lm_batch_size,
                      warmup_steps=min(100, args.lm_steps // 10 + 1), seed=seed)


def _gap_cell(summary: dict) -> str:
    if summary["gap_sd"] is not None:
        return f"{summary['gap']:.3f} +- {summary['gap_sd']:.3f} ({summary['seeds']} seeds)"
    low, high = summary["gap_ci95"]
    return f"{summary['gap']:.3f} [{low:.3f}, {high:.3f}]"


def _change_cell(summary: dict) -> str:
    if "change_vs_none" not in summary:
        return "-"
    change = summary["change_vs_none"]
    low, high = change["ci95"]
    return f"{change['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def table(results: dict) -> str:
    arms = [name for name in ARMS if name in results]
    flatten = all("flatten" in results[name] for name in arms)
    header = ["codec", "SI-SDR (dB)", "mel distance", "loss delay (median)",
              "loss parallel (median)", "loss delay (paper bw)", "NLL joint (delay)",
              "gap delay", "vs none", "gap parallel", "vs none"] + (
                  ["NLL flatten"] if flatten else [])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in arms:
        r = results[name]
        losses = r["independence_loss"]
        cells = [name, f"{r['si_sdr']:.2f}", f"{r['mel_distance']:.3f}",
                 f"{losses['median_delay']:.2e}", f"{losses['median_parallel']:.2e}",
                 f"{losses['paper_bandwidths_delay']:.2e}",
                 f"{r['gap']['delay']['nll_joint']:.3f}", _gap_cell(r["gap"]["delay"]),
                 _change_cell(r["gap"]["delay"]), _gap_cell(r["gap"]["parallel"]),
                 _change_cell(r["gap"]["parallel"])]
        if flatten:
            cells.append(f"{r['flatten']['test_nll_per_frame']:.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="the corpus manifest (train/test splits)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--codec-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings over the shared and the arm configs, "
                             "e.g. steps=200")
    parser.add_argument("--start-from", default=DEFAULT_START, metavar="CODEC",
                        help="the codec every arm fine-tunes (mmdtok:NAME, a folder, a Hub "
                             "id), or 'scratch' to train the shared codec without the loss "
                             "first (codec_shared.json)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="stages run side by side in this many processes (the arms, "
                             "then the gaps, are independent); each gets its share of the "
                             "CPU threads and a log in OUT/logs/")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="the codecs to train and compare (none, the arm without the "
                             "loss, is always needed)")
    parser.add_argument("--window-seconds", type=float, default=10.0,
                        help="test windows for the held-out IndependenceLoss")
    parser.add_argument("--lm-steps", type=int, default=2000)
    parser.add_argument("--lm-batch-size", type=int, default=16)
    parser.add_argument("--lm-frames", type=int, default=50, help="LM context in frames")
    parser.add_argument("--lm-dim", type=int, default=128)
    parser.add_argument("--lm-layers", type=int, default=4)
    parser.add_argument("--lm-heads", type=int, default=4)
    parser.add_argument("--lm-dropout", type=float, default=0.0,
                        help="none by default: the LMs see the data about twice")
    parser.add_argument("--depth-dim", type=int, default=64, help="width of the depth head")
    parser.add_argument("--depth-layers", type=int, default=1)
    parser.add_argument("--lm-seeds", type=int, nargs="+", default=[0],
                        help="one gap per seed; with one seed the table shows its "
                             "bootstrap interval, with several the spread over seeds")
    parser.add_argument("--flatten", action="store_true",
                        help="also train the flattened LM of each codec (slow on a CPU)")
    args = parser.parse_args(argv)
    args.arms = [name for name in ARMS if name in args.arms]  # none first, no repeats
    try:
        results = run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = results["start"]
    print(f"start: {start['codec']}, SI-SDR {start['si_sdr']:.2f} dB, mel distance "
          f"{start['mel_distance']:.3f} on the test split")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
