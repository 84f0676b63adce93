"""The paper's central experiment at CPU scale: does the independence loss bring the cheap
factorized (delay) LM closer to the joint (flattened) one?

    python -m examples.paper_experiment.run data/corpus/manifest.jsonl -o runs/paper

For each of two codecs trained identically except for the independence loss
(``codec_baseline.json``, ``codec_independence.json``: small-music with 4 x 256 codes):

1. train the codec on the corpus's train split (``mmdtok train-codec``'s trainer);
2. encode the train and test splits to token files;
3. measure on the test split (pieces never trained on): SI-SDR and mel distance,
   the normalized total correlation and the paper's pairwise dependence of the delayed
   codes, and the IndependenceLoss value of the delayed streams;
4. train two MusicGen-style LMs of the same size on the train tokens, one with the delay
   pattern (K heads, codes of a step predicted independently) and one flattened (the
   joint model), and measure their held-out NLL per frame on the test tokens.

The figure of interest is the gap NLL(delay) - NLL(flatten): what the factorization
costs. Every stage is skipped when its result is already in OUT (rerun to resume; delete
a result to redo it). Writes OUT/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from examples.musicgen_lm.data import TokenSet, load_token_set, windows
from examples.musicgen_lm.model import LMConfig, nll_per_frame
from examples.musicgen_lm.train import LMTraining, train_lm
from mmdtok import Codec, IndependenceLoss
from mmdtok.atomic import atomic_path
from mmdtok.folders import Task, encode_files
from mmdtok.metrics import dependence_report, stream_independence
from mmdtok.tokens import SUFFIX
from mmdtok.train.config import load_config
from mmdtok.train.data import find_audio
from mmdtok.train.loop import train
from mmdtok.train.validation import evaluate_codec, load_clips

HERE = Path(__file__).parent
CODECS = {"baseline": HERE / "codec_baseline.json",
          "independence": HERE / "codec_independence.json"}
LM_PATTERNS = ("delay", "flatten")


def stage(path: Path, compute, *args) -> dict:
    """The JSON result at ``path``, computed (and written) only when missing."""
    if path.exists():
        return json.loads(path.read_text())
    started = time.time()
    result = compute(*args) | {"seconds": round(time.time() - started, 1)}
    with atomic_path(path) as temp:  # never a half-written result
        temp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def train_codec(name: str, manifest: Path, out: Path, overrides: list[str]) -> dict:
    config = load_config(CODECS[name]).with_overrides(overrides)
    run_dir = out / f"codec-{name}"
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    with tqdm(total=config.steps, desc=f"codec ({name})") as bar:
        run = train(config, [manifest], run_dir, resume=resume,
                    progress=lambda step, values: bar.update(step - bar.n))
        bar.update(run.step - bar.n)  # a finished run resumes at its end
    return {"steps": run.step, "config": config.to_dict()}


def encode_split(codec: Codec, files: list[Path], out: Path) -> None:
    tasks = [Task(f, out / f.with_suffix(SUFFIX).name) for f in files]
    if len({task.target for task in tasks}) < len(tasks):
        raise ValueError(f"two audio files of {out.name} share a name")
    report = encode_files(codec, tasks)
    if report.failed:
        raise RuntimeError(f"encoding failed: {report.failed[:3]}")


@torch.inference_mode()
def measure_codec(codec: Codec, test_files: list[Path], test_tokens: TokenSet,
                  seconds: float) -> dict:
    clips = load_clips(test_files, codec.sample_rate, codec.channels)
    quality, _ = evaluate_codec(codec, clips)
    frames = round(seconds * codec.frame_rate)  # windows for the dependence measures
    codes = windows(test_tokens, frames)
    report = dependence_report(codes, codec.codebook_size, "delay")
    streams = torch.cat([codec.encode_streams(clip[None, :, : frames * codec.hop_length])
                         for clip in clips if clip.shape[-1] >= frames * codec.hop_length])
    loss = IndependenceLoss.from_preset("rff", num_features=1024)
    return {"si_sdr": quality.si_sdr, "mel_distance": quality.mel_distance,
            "perplexities": list(quality.perplexities), "test_seconds": quality.seconds,
            "delayed_rows": report.rows,
            "normalized_total_correlation": report.normalized_total_correlation,
            "pairwise_dependence": report.pairwise_dependence,
            "stream_independence_loss": stream_independence(streams, loss)}


def train_and_score_lm(pattern: str, tokens: TokenSet, held_out: TokenSet, frames: int,
                       lm_shape: dict, training: LMTraining) -> dict:
    config = LMConfig(tokens.num_codebooks, tokens.codebook_size, pattern, frames, **lm_shape)
    model, history = train_lm(config, training, tokens)
    test = windows(held_out, frames)
    return {"pattern": pattern, "lm": config.to_dict(), "training": asdict(training),
            "final_train_loss": sum(history[-50:]) / len(history[-50:]),
            "test_nll_per_frame": nll_per_frame(model, test),
            "test_frames": test.shape[0] * test.shape[-1]}


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    files = find_audio([args.manifest])
    by_split = {s: [f.path for f in files if f.split == s] for s in ("train", "test")}
    if not by_split["train"] or not by_split["test"]:
        raise ValueError(f"{args.manifest} needs files in its 'train' and 'test' splits")
    training = LMTraining(steps=args.lm_steps, batch_size=args.lm_batch_size,
                          warmup_steps=min(100, args.lm_steps // 10 + 1))
    lm_shape = {"dim": args.lm_dim, "layers": args.lm_layers, "heads": args.lm_heads,
                "dropout": args.lm_dropout}
    results: dict = {}
    for name in CODECS:
        stage(out / "results" / f"codec-{name}.json", train_codec, name, args.manifest, out,
              args.codec_override)
        codec = Codec.from_pretrained(out / f"codec-{name}")
        tokens = {}
        for split, split_files in by_split.items():
            encode_split(codec, split_files, out / f"tokens-{name}" / split)
            tokens[split] = load_token_set([out / f"tokens-{name}" / split])
        measures = stage(out / "results" / f"quality-{name}.json", measure_codec, codec,
                         by_split["test"], tokens["test"], args.window_seconds)
        lms = {pattern: stage(out / "results" / f"lm-{name}-{pattern}.json",
                              train_and_score_lm, pattern, tokens["train"], tokens["test"],
                              args.lm_frames, lm_shape, training)
               for pattern in LM_PATTERNS}
        results[name] = {**measures, "lm": lms,
                         "nll_gap": lms["delay"]["test_nll_per_frame"]
                         - lms["flatten"]["test_nll_per_frame"]}
    with atomic_path(out / "results.json") as temp:
        temp.write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict) -> str:
    rows = ["| codec | SI-SDR (dB) | mel distance | normalized TC (delayed codes) | "
            "pairwise dependence | IndependenceLoss (streams) | NLL delay | NLL flatten | "
            "gap |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        nll = {p: r["lm"][p]["test_nll_per_frame"] for p in LM_PATTERNS}
        rows.append(f"| {name} | {r['si_sdr']:.2f} | {r['mel_distance']:.3f} | "
                    f"{r['normalized_total_correlation']:.4f} | "
                    f"{r['pairwise_dependence']:.4f} | {r['stream_independence_loss']:.2e} | "
                    f"{nll['delay']:.3f} | {nll['flatten']:.3f} | {r['nll_gap']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="the corpus manifest (train/test splits)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--codec-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings over both codec configs, e.g. steps=200")
    parser.add_argument("--window-seconds", type=float, default=10.0,
                        help="test windows for the dependence measures")
    parser.add_argument("--lm-steps", type=int, default=2000)
    parser.add_argument("--lm-batch-size", type=int, default=16)
    parser.add_argument("--lm-frames", type=int, default=50, help="LM context in frames")
    parser.add_argument("--lm-dim", type=int, default=128)
    parser.add_argument("--lm-layers", type=int, default=4)
    parser.add_argument("--lm-heads", type=int, default=4)
    parser.add_argument("--lm-dropout", type=float, default=0.0,
                        help="none by default: the LMs see the data about twice")
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
