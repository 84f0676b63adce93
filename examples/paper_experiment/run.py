"""The paper's central experiment at CPU scale: does the independence loss shrink what the
fast factorized LM loses against the exact joint one?

    python -m examples.paper_experiment.run data/corpus/manifest.jsonl -o runs/paper

1. A shared codec: ``small-music`` (4 x 1,024 codes) trained from scratch on the corpus's
   train split *without* the loss (``codec_shared.json``).
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
Writes OUT/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
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


def stage(path: Path, compute, *args) -> dict:
    """The JSON result at ``path``, computed (and written) only when missing."""
    if path.exists():
        return json.loads(path.read_text())
    started = time.time()
    result = compute(*args) | {"seconds": round(time.time() - started, 1)}
    with atomic_path(path) as temp:  # never a half-written result
        temp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def codec_config(name: str, out: Path, overrides: list[str]) -> TrainConfig:
    """The shared codec's settings, or an arm's: the arm settings, starting from the
    shared codec, with the arm's loss."""
    if name == "shared":
        return load_config(HERE / "codec_shared.json").with_overrides(overrides)
    arm = load_config(HERE / "codec_arm.json").with_overrides(overrides)
    return replace(arm, **ARMS[name], init_from=str(out / "codec-shared"))


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
    files = find_audio([args.manifest])
    by_split = {s: [f.path for f in files if f.split == s] for s in ("train", "test")}
    if not by_split["train"] or not by_split["test"]:
        raise ValueError(f"{args.manifest} needs files in its 'train' and 'test' splits")
    lm_shape = {"dim": args.lm_dim, "layers": args.lm_layers, "heads": args.lm_heads,
                "dropout": args.lm_dropout, "depth_dim": args.depth_dim,
                "depth_layers": args.depth_layers}
    results_dir = out / "results"
    stage(results_dir / "codec-shared.json", train_codec,
          codec_config("shared", out, args.codec_override), args.manifest, out / "codec-shared")
    results: dict = {}
    for name in ARMS:
        stage(results_dir / f"codec-{name}.json", train_codec,
              codec_config(name, out, args.codec_override), args.manifest, out / f"codec-{name}")
        codec = Codec.from_pretrained(out / f"codec-{name}")
        tokens = {}
        for split, split_files in by_split.items():
            encode_split(codec, split_files, out / f"tokens-{name}" / split)
            tokens[split] = load_token_set([out / f"tokens-{name}" / split])
        measures = stage(results_dir / f"quality-{name}.json", measure_codec, codec,
                         by_split["test"], args.window_seconds)
        gaps = {}
        for layout in LAYOUTS:
            config = LMConfig(tokens["train"].num_codebooks, tokens["train"].codebook_size,
                              layout, args.lm_frames, **lm_shape)
            runs = [stage(results_dir / f"gap-{name}-{layout}-seed{seed}.json",
                          factorization_gap, config, lm_training(args, seed), tokens["train"],
                          tokens["test"]) for seed in args.lm_seeds]
            gaps[layout] = summarize(runs)
        results[name] = {**measures, "gap": gaps}
        if args.flatten:
            config = LMConfig(tokens["train"].num_codebooks, tokens["train"].codebook_size,
                              "flatten", args.lm_frames, **{
                                  k: v for k, v in lm_shape.items() if "depth" not in k})
            results[name]["flatten"] = stage(
                results_dir / f"lm-{name}-flatten.json", flattened_lm, tokens["train"],
                tokens["test"], config, lm_training(args, args.lm_seeds[0]))
    for name in ("delay", "parallel"):  # each arm's gap against the arm without the loss
        for layout in LAYOUTS:
            results[name]["gap"][layout]["change_vs_none"] = paired_difference(
                results[name]["gap"][layout]["window_gaps"],
                results["none"]["gap"][layout]["window_gaps"])
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
    flatten = all("flatten" in r for r in results.values())
    header = ["codec", "SI-SDR (dB)", "mel distance", "loss delay (median)",
              "loss parallel (median)", "loss delay (paper bw)", "NLL joint (delay)",
              "gap delay", "vs none", "gap parallel", "vs none"] + (
                  ["NLL flatten"] if flatten else [])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
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
    try:
        results = run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
