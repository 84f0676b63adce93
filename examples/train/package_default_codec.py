"""Turn a finished train-codec run into the codec shipped inside the package, measure it
on held-out music and write its model card.

    python examples/train/package_default_codec.py RUN_DIR data/corpus/manifest.jsonl \\
        --out src/mmdtok/weights/small-music

Writes OUT/config.json + OUT/model.safetensors (weight norm folded; float16 with
``--half``, loaded back as float32), OUT/quality.json (every figure, machine-readable) and
OUT/MODEL_CARD.md. Every figure is measured on the weights as written, loaded back the way
users load them: the test split of the corpus (pieces never seen in training), at all
bitrates (the first 1..K codebooks), plus the excerpts in examples/audio (which the
package tests measure again). The model card takes every figure, the architecture and the
corpus facts from quality.json; ``--card-only`` writes it again from OUT/quality.json
(filling in what older quality.json files lack: the architecture from OUT's codec, the
corpus facts from the manifest).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import soundfile
import torch

from mmdtok import Codec
from mmdtok.metrics import normalized_pairwise_dependence
from mmdtok.persistence import RunFolder, load_pretrained, save_pretrained
from mmdtok.train.checkpoint import load_checkpoint
from mmdtok.train.config import load_config
from mmdtok.train.data import ClipSampler, find_audio
from mmdtok.train.validation import evaluate_codec, load_clips, recalibrate_latent_norm

ROOT = Path(__file__).parents[2]
EXCERPTS = sorted((ROOT / "examples" / "audio").glob("*.flac"))
WINDOW_SECONDS = 10.0  # code windows for the dependence measure


def calibration_batches(codec: Codec, run_dir: Path, manifest: Path, count: int):
    """The batches the trainer recalibrates on: beyond the last step, rank 0."""
    settings = load_config(RunFolder(run_dir).settings)
    files = [f for f in find_audio([manifest]) if f.split == "train"]
    sampler = ClipSampler.from_config(files, settings, sample_rate=codec.sample_rate,
                                      channels=codec.channels)
    return (sampler.batch(settings.steps + i, rank=0) for i in range(count))


def export(run_dir: Path, manifest: Path, out: Path, half: bool, calibrate: int
           ) -> tuple[Codec, float | None]:
    """The shipped codec, loaded back from ``out``, and (with ``half``) the largest change
    of SI-SDR on the excerpts that storing float16 weights makes."""
    codec = Codec.from_pretrained(run_dir)  # the moving average, weight norm folded
    if calibrate:  # what train-codec does at the end of a run (calibration_batches)
        recalibrate_latent_norm(codec, calibration_batches(codec, run_dir, manifest, calibrate))
    float32 = copy.deepcopy(codec) if half else None  # the reference for the float16 change
    save_pretrained(codec.half() if half else codec, out)  # weights saved as they are ...
    shipped = load_pretrained(out)  # ... and what users get: float32, eval mode
    gap = None
    if float32 is not None:
        clips = load_clips(EXCERPTS, shipped.sample_rate, shipped.channels)
        gap = max(abs(evaluate_codec(shipped, [c])[0].si_sdr
                      - evaluate_codec(float32, [c])[0].si_sdr) for c in clips)
    return shipped, gap


def architecture(codec: Codec) -> dict:
    """What the model card says of the network, from the codec's own config."""
    seanet = codec.config.seanet
    return {"sample_rate": codec.sample_rate, "channels": codec.channels,
            "n_filters": seanet.n_filters, "ratios": list(seanet.ratios),
            "lstm_layers": seanet.lstm_layers, "dimension": seanet.dimension,
            "num_codebooks": codec.num_codebooks, "codebook_size": codec.codebook_size,
            "frame_rate": codec.frame_rate, "quantizer": codec.config.quantizer["kind"]}


def corpus_facts(manifest: Path) -> dict:
    """Hours of audio in all splits and the longest piece, from the files themselves."""
    durations = [soundfile.info(str(f.path)).duration for f in find_audio([manifest])]
    return {"hours": sum(durations) / 3600, "longest_seconds": max(durations),
            "pieces": len(durations)}


@torch.inference_mode()
def code_dependence(codec: Codec, clips: list[torch.Tensor]) -> dict[str, float]:
    """The paper's normalized pairwise dependence of the codes, delayed and parallel, on
    windows of ``WINDOW_SECONDS`` cut from every clip."""
    frames = round(WINDOW_SECONDS * codec.frame_rate)
    windows = []
    for clip in clips:
        codes = codec.encode(clip[None])[0]
        windows += [codes[:, i : i + frames] for i in range(0, codes.shape[-1] - frames + 1,
                                                             frames)]
    stacked = torch.stack(windows)
    return {pattern: float(normalized_pairwise_dependence(stacked, codec.codebook_size,
                                                          pattern))
            for pattern in ("delay", "parallel")} | {"windows": len(windows)}


def training_facts(run_dir: Path) -> dict:
    run = RunFolder(run_dir)
    checkpoint = load_checkpoint(run.checkpoint)
    started, ended = run.settings.stat().st_mtime, run.checkpoint.stat().st_mtime
    return {"settings": json.loads(run.settings.read_text()), "steps": int(checkpoint["step"]),
            "skipped": int(checkpoint["skipped"]), "hours": (ended - started) / 3600}


def measure(codec: Codec, manifest: Path) -> dict:
    files = find_audio([manifest])
    test = [f.path for f in files if f.split == "test"]
    clips = load_clips(test, codec.sample_rate, codec.channels)
    excerpts = load_clips(EXCERPTS, codec.sample_rate, codec.channels)
    by_bitrate = {}
    for n_q in range(1, codec.num_codebooks + 1):
        quality, _ = evaluate_codec(codec, clips, n_q)
        by_bitrate[n_q] = {"kbps": n_q * math.log2(codec.codebook_size) * codec.frame_rate
                           / 1000, "si_sdr": quality.si_sdr,
                           "mel_distance": quality.mel_distance}
    full = quality  # all codebooks
    return {"test": full.as_dict() | {"clips": full.clips, "seconds": full.seconds},
            "test_by_codebooks": by_bitrate,
            "test_dependence": code_dependence(codec, clips),
            "excerpts": {path.name: evaluate_codec(codec, [clip])[0].as_dict()
                         for path, clip in zip(EXCERPTS, excerpts)},
            "train_files": sum(f.split == "train" for f in files),
            "window_seconds": WINDOW_SECONDS, "corpus": corpus_facts(manifest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("manifest", type=Path, help="the corpus manifest (its test split)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="recalibrate the latent norm on N training batches first "
                             "(for runs made before train-codec did it itself)")
    parser.add_argument("--card-only", action="store_true",
                        help="write OUT/MODEL_CARD.md again from OUT/quality.json")
    args = parser.parse_args()
    if args.card_only:
        figures = json.loads((args.out / "quality.json").read_text())
        codec = load_pretrained(args.out)
        figures.setdefault("architecture", architecture(codec))
        figures.setdefault("corpus", corpus_facts(args.manifest))
        figures.setdefault("window_seconds", WINDOW_SECONDS)
        figures["fingerprint"] = codec.fingerprint()
    else:
        start = time.time()
        codec, gap = export(args.run_dir, args.manifest, args.out, args.half, args.calibrate)
        figures = {"codec": codec.config.name, "fingerprint": codec.fingerprint(),
                   "half": args.half, "half_si_sdr_gap": gap,
                   "recalibrated_on": args.calibrate,
                   "training": training_facts(args.run_dir),
                   "architecture": architecture(codec),
                   "bitrate_kbps": codec.num_codebooks * math.log2(codec.codebook_size)
                   * codec.frame_rate / 1000,
                   "parameters": sum(p.numel() for p in codec.parameters())} | measure(
                       codec, args.manifest)
        print(f"measured in {time.time() - start:.0f} s")
    (args.out / "quality.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card(figures))
    print(json.dumps(figures, indent=2))


QUANTIZER_NAMES = {"rvq": "residual VQ", "pvq": "product VQ", "fsq": "FSQ"}


def _ratios(ratios: list[int]) -> str:
    return "-".join(map(str, ratios))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def model_card(f: dict) -> str:
    """The model card, every figure and fact taken from ``f`` (quality.json)."""
    t, s, test, a = f["training"], f["training"]["settings"], f["test"], f["architecture"]
    k, size = a["num_codebooks"], a["codebook_size"]
    rows = "\n".join(f"| {n} | {v['kbps']:.2f} | {v['si_sdr']:.2f} | {v['mel_distance']:.3f} |"
                     for n, v in f["test_by_codebooks"].items())
    excerpts = "\n".join(f"| `{name}` | {v['si_sdr']:.2f} | {v['mel_distance']:.3f} |"
                         for name, v in f["excerpts"].items())
    usage = "\n".join(
        f"| {i} | {test[f'perplexity_{i}']:.0f} | {test[f'utilization_{i}']:.1%} |"
        for i in range(k))
    independence = (f"on: preset `{s['independence_preset']}`, a macro-batch of "
                    f"{s['independence_every']} steps, weight {s['independence_weight']:g}"
                    if s["independence"] else "off")
    adversarial = ("from step " + str(s["adversarial_from"])
                   if s["adversarial_from"] < s["steps"] else "off")
    recal = (f",\n  its latent norm recalibrated on {f['recalibrated_on']} training "
             "batches of its own\n  encoder (what train-codec now does at the end of a run)"
             if f["recalibrated_on"] else "")
    gap = f.get("half_si_sdr_gap")
    half = ("" if not f["half"] else ";\n  stored as float16" + (
        "" if gap is None else f" (on the excerpts below, float32 weights give SI-SDR within "
        f"{gap:.2f} dB)"))
    corpus = f["corpus"]
    channels = {1: "mono", 2: "stereo"}.get(a["channels"], f"{a['channels']}-channel")
    window = f.get("window_seconds", WINDOW_SECONDS)
    return f"""# {f['codec']}: the default codec of mmdtok

A small {channels} {a['sample_rate'] / 1000:g} kHz music codec \
({f['parameters'] / 1e6:.2f} M parameters), shipped inside the package so that
`mmdtok encode song.wav` works offline. SEANet encoder and decoder (EnCodec's architecture
at {a['n_filters']} filters, strides {_ratios(a['ratios'])}, \
{_count(a['lstm_layers'], 'LSTM layer')}, {a['dimension']}-dim latent),
{QUANTIZER_NAMES.get(a['quantizer'], a['quantizer'])} with {k} codebooks of {size:,} entries
at {a['frame_rate']:g} frames/s: {f['bitrate_kbps']:.1f} kbps with all codebooks, and any
prefix of the codebooks is a lower bitrate. Weights: weight norm folded, stored as
{"float16" if f['half'] else "float32"}, fingerprint `{f['fingerprint']}`.

It is a small codec trained for {t['steps']:,} steps on a CPU: good enough to try the
tools, the token format and the language-model examples on real music, not a
replacement for EnCodec or DAC in production.

## Training
- Data: the `small` recipe of `examples/datasets/render_corpus.py`: {f['train_files']} pieces
  of the train split ({corpus['hours']:.1f} h in {corpus['pieces']} pieces in all splits, the
  longest {corpus['longest_seconds']:.0f} s) from the music21 corpus (Palestrina, Bach,
  Monteverdi, Beethoven, the Trecento, Irish and Essen folk tunes, ...), rendered with
  General MIDI instruments by timidity and the FluidR3 GM SoundFont.
- `mmdtok train-codec data/corpus/manifest.jsonl -o runs/default --config
  examples/train/default_codec.json`: {t['steps']:,} steps
  ({t['skipped']} skipped), batch {s['batch_size']} x {s['segment_seconds']:g} s random crops,
  Adam (betas {s['betas'][0]:g}, {s['betas'][1]:g}), lr {s['lr']:g} with {s['warmup_steps']}
  warmup steps and a {s['schedule']} schedule, weight moving average {s['ema_decay']:g}
  (exported).
- Losses: L1 on the waveform and the multi-scale mel loss through the gradient balancer
  (weights {s['weights']['l1']:g} and {s['weights']['mel']:g}), the commitment loss;
  adversarial and feature-matching losses {adversarial}.
- Independence loss: {independence},
  delay pattern.
- Time: {t['hours']:.2f} h of wall-clock time.
- Export: the weight moving average{recal}, weight norm folded{half}.

## Quality on held-out music
The test split of the corpus: {test['clips']} pieces never used in training,
{test['seconds'] / 60:.1f} min in all, each encoded and decoded whole.

| codebooks | kbps | SI-SDR (dB) | mel distance |
|---|---|---|---|
{rows}

Codebook use on the same pieces (all {k} codebooks):

| codebook | perplexity (of {size:,}) | entries used |
|---|---|---|
{usage}

Normalized pairwise dependence of the codes (the paper's measure, plug-in, on
{f['test_dependence']['windows']} windows of {window:g} s): {f['test_dependence']['delay']:.4f}
at the steps a delay-pattern LM predicts together, {f['test_dependence']['parallel']:.4f}
within a frame (0: independent; plug-in estimates are biased upwards on this few rows).

The excerpts in `examples/audio` (the package tests measure these again):

| excerpt | SI-SDR (dB) | mel distance |
|---|---|---|
{excerpts}

SI-SDR: scale-invariant signal-to-distortion ratio (higher is better). Mel distance:
EnCodec's multi-scale mel loss, normalized (`mmdtok.losses.spectral.mel_distance`; lower
is better). Figures from `examples/train/package_default_codec.py`, also in
`quality.json` beside this card.

## Licence
Weights: MIT, as mmdtok. Training audio: public-domain compositions from the music21
corpus, rendered with the MIT-licensed FluidR3 GM SoundFont.
"""


if __name__ == "__main__":
    main()
