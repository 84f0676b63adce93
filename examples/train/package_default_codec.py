"""Turn a finished train-codec run into the codec shipped inside the package, measure it
on held-out music and write its model card.

    python examples/train/package_default_codec.py RUN_DIR data/corpus/manifest.jsonl \\
        --out src/mmdtok/weights/small-music

Writes OUT/config.json + OUT/model.safetensors (weight norm folded; float16 with
``--half``, loaded back as float32), OUT/quality.json (every figure, machine-readable) and
OUT/MODEL_CARD.md. Every figure is measured on the weights as written, loaded back the way
users load them: the test split of the corpus (pieces never seen in training), at all
bitrates (the first 1..K codebooks), plus the excerpts in examples/audio (which the
package tests measure again).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from mmdtok import Codec, __version__
from mmdtok.hub import write_folder
from mmdtok.metrics import normalized_pairwise_dependence
from mmdtok.persistence import FORMAT, FORMAT_VERSION, load_pretrained
from mmdtok.train.data import ClipSampler, find_audio
from mmdtok.train.validation import evaluate_codec, load_clips, recalibrate_latent_norm

ROOT = Path(__file__).parents[2]
EXCERPTS = sorted((ROOT / "examples" / "audio").glob("*.flac"))
WINDOW_SECONDS = 10.0  # code windows for the dependence measure


def calibration_batches(codec: Codec, run_dir: Path, manifest: Path, count: int):
    """The batches the trainer recalibrates on: beyond the last step, rank 0."""
    settings = json.loads((run_dir / "train_config.json").read_text())
    files = [f for f in find_audio([manifest]) if f.split == "train"]
    sampler = ClipSampler(files, sample_rate=codec.sample_rate, channels=codec.channels,
                          segment=round(settings["segment_seconds"] * codec.sample_rate),
                          batch_size=settings["batch_size"], seed=settings["seed"])
    return (sampler.batch(settings["steps"] + i, rank=0) for i in range(count))


def export(run_dir: Path, manifest: Path, out: Path, half: bool, calibrate: int) -> Codec:
    codec = Codec.from_pretrained(run_dir)  # the moving average, weight norm folded
    if calibrate:  # what train-codec does at the end of a run (calibration_batches)
        recalibrate_latent_norm(codec, calibration_batches(codec, run_dir, manifest, calibrate))
    state = {k: (v.half() if half and v.is_floating_point() else v)
             for k, v in codec.state_dict().items()}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "mmdtok_version": __version__, "codec": codec.config.to_dict()}
    write_folder(out, config, state, metadata={"format": FORMAT})
    return load_pretrained(out)  # what users get: float32, eval mode


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
    settings = json.loads((run_dir / "train_config.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True,
                            map_location="cpu")
    started = (run_dir / "train_config.json").stat().st_mtime
    ended = (run_dir / "checkpoints" / "last.pt").stat().st_mtime
    return {"settings": settings, "steps": int(checkpoint["step"]),
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
            "train_files": sum(f.split == "train" for f in files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("manifest", type=Path, help="the corpus manifest (its test split)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="recalibrate the standardization on N training batches first "
                             "(for runs made before train-codec did it itself)")
    args = parser.parse_args()
    start = time.time()
    codec = export(args.run_dir, args.manifest, args.out, args.half, args.calibrate)
    figures = {"codec": codec.config.name, "fingerprint": codec.fingerprint(),
               "half": args.half, "recalibrated_on": args.calibrate,
               "training": training_facts(args.run_dir),
               "bitrate_kbps": codec.num_codebooks * math.log2(codec.codebook_size)
               * codec.frame_rate / 1000,
               "parameters": sum(p.numel() for p in codec.parameters())} | measure(
                   codec, args.manifest)
    (args.out / "quality.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card(figures))
    print(json.dumps(figures, indent=2))
    print(f"measured in {time.time() - start:.0f} s")


def model_card(f: dict) -> str:
    """The model card, every figure taken from ``f`` (quality.json)."""
    t, s, test = f["training"], f["training"]["settings"], f["test"]
    k = len(f["test_by_codebooks"])
    rows = "\n".join(f"| {n} | {v['kbps']:.2f} | {v['si_sdr']:.2f} | {v['mel_distance']:.3f} |"
                     for n, v in f["test_by_codebooks"].items())
    excerpts = "\n".join(f"| `{name}` | {v['si_sdr']:.2f} | {v['mel_distance']:.3f} |"
                         for name, v in f["excerpts"].items())
    usage = "\n".join(f"| {i} | {test[f'perplexity_{i}']:.0f} | {test[f'utilization_{i}']:.1%} |"
                      for i in range(k))
    independence = (f"on: preset `{s['independence_preset']}`, a macro-batch of "
                    f"{s['independence_every']} steps, weight {s['independence_weight']:g}"
                    if s["independence"] else "off")
    adversarial = ("from step " + str(s["adversarial_from"])
                   if s["adversarial_from"] < s["steps"] else "off (CPU budget)")
    recal = (f",\n  its latent standardization recalibrated on {f['recalibrated_on']} training "
             "batches of its own\n  encoder (what train-codec now does at the end of a run)"
             if f["recalibrated_on"] else "")
    half = (";\n  stored as float16 (on the excerpts below, float32 weights give SI-SDR within "
            "0.01 dB)" if f["half"] else "")
    return f"""# {f['codec']}: the default codec of mmdtok

A small mono 24 kHz music codec ({f['parameters'] / 1e6:.2f} M parameters), shipped inside
the package so that `mmdtok encode song.wav` works offline. SEANet encoder and decoder
(EnCodec's architecture at 16 filters, strides 8-5-4-2, one LSTM layer, 64-dim latent),
residual VQ with {k} codebooks of 1,024 entries at 75 frames/s: {f['bitrate_kbps']:.1f} kbps with
all codebooks, and any prefix of the codebooks is a lower bitrate. Weights: weight norm
folded, stored as {"float16" if f['half'] else "float32"}, fingerprint `{f['fingerprint']}`.

It is a small codec trained for {t['steps']:,} steps on a 2-core CPU: good enough to try the
tools, the token format and the language-model examples on real music, not a
replacement for EnCodec or DAC in production.

## Training
- Data: the `small` recipe of `examples/datasets/render_corpus.py`: {f['train_files']} pieces
  of the train split (3.4 h in all splits, pieces cut at 45 s) from the music21 corpus
  (Palestrina, Bach, Monteverdi, Beethoven, the Trecento, Irish and Essen folk tunes, ...),
  rendered with General MIDI instruments by timidity and the FluidR3 GM SoundFont.
- `mmdtok train-codec data/corpus/manifest.jsonl -o runs/default --config
  examples/train/default_codec.json` with mmdtok {__version__}: {t['steps']:,} steps
  ({t['skipped']} skipped), batch {s['batch_size']} x {s['segment_seconds']:g} s random crops,
  Adam (betas {s['betas'][0]:g}, {s['betas'][1]:g}), lr {s['lr']:g} with {s['warmup_steps']}
  warmup steps and a cosine schedule, weight moving average {s['ema_decay']:g} (exported).
- Losses: L1 on the waveform and the multi-scale mel loss through the gradient balancer
  (weights {s['weights']['l1']:g} and {s['weights']['mel']:g}), the commitment loss;
  adversarial and feature-matching losses {adversarial}.
- Independence loss: {independence},
  delay pattern.
- Time: {t['hours']:.2f} h of wall-clock time on 2 CPU cores (shared with other work).
- Export: the weight moving average{recal}, weight norm folded{half}.

## Quality on held-out music
The test split of the corpus: {test['clips']} pieces never used in training,
{test['seconds'] / 60:.1f} min in all, each encoded and decoded whole.

| codebooks | kbps | SI-SDR (dB) | mel distance |
|---|---|---|---|
{rows}

Codebook use on the same pieces (all {k} codebooks):

| codebook | perplexity (of 1,024) | entries used |
|---|---|---|
{usage}

Normalized pairwise dependence of the codes (the paper's measure, plug-in, on
{f['test_dependence']['windows']} windows of 10 s): {f['test_dependence']['delay']:.4f} at the steps a
delay-pattern LM predicts together, {f['test_dependence']['parallel']:.4f} within a frame
(0: independent; plug-in estimates are biased upwards on this few rows).

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
