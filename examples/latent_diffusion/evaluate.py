"""Measure a trained latent diffusion run: its v-loss on held-out latents next to the
train latents, and how generated latents compare with real ones.

    mmdtok encode data/real/manifest.jsonl --split test -o latents/test --model runs/vae
    python -m examples.latent_diffusion.evaluate runs/dit --train latents/train \\
        --test latents/test --manifest data/real/manifest.jsonl -o runs/dit/eval.json

- **v-loss:** the training objective (mean squared error of the v-prediction, prompt
  kept) on the same number of random windows of each set, at the same noise levels
  (``--windows`` windows x ``--levels`` values of t), with the EMA weights, next to
  the score of predicting v = 0 on the same windows (about 1 on unit-scale latents).
- **Generated latents:** ``--samples`` generations (0: none) (the prompts of the first test
  files, seeds 0, 1, ...; ``--seconds`` long, 50 DPM-Solver++ steps, guidance 3), each
  given its length as ``seconds_total``: their frame count, and the mean and standard
  deviation of their normalized channels (real latents: 0 and 1 by construction of the
  normalization) next to those of the test latents.

What it does not measure: how the samples sound, or whether they follow their prompt.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from examples.latent_diffusion.data import CropSampler, LatentSet, load_latent_set
from examples.latent_diffusion.diffusion import noisy
from examples.latent_diffusion.generate import generate, load_model
from examples.latent_diffusion.model import Conditioning, DiT
from examples.latent_diffusion.text import Vocabulary
from mmdtok.atomic import atomic_path


@torch.no_grad()
def v_loss(model: DiT, vocab: Vocabulary, data: LatentSet, frames: int, windows: int,
           levels: int, seed: int = 0) -> tuple[float, float]:
    """The v-objective on ``windows`` random windows of ``data`` at ``levels`` noise
    levels each (t at the midpoints of ``levels`` equal bins), real frames only; and
    the same for the prediction v = 0 (the mean square of the targets)."""
    batch = CropSampler(data, frames, seed=seed).batch(windows)
    x0 = model.normalize(batch.latents) * batch.mask[:, None]
    ids = vocab.encode(batch.prompts, model.config.max_words)
    cond = Conditioning(ids, batch.seconds_start, batch.seconds_total)
    generator = torch.Generator().manual_seed(seed + 1)
    total = zero = 0.0
    for level in range(levels):
        t = torch.full((windows,), (level + 0.5) / levels)
        noise = torch.randn(x0.shape, generator=generator)
        x_t, target = noisy(x0, noise, t)
        error = (model(x_t, t, cond, batch.mask) - target).pow(2) * batch.mask[:, None]
        count = batch.mask.sum() * x0.shape[1]
        total += float(error.sum() / count)
        zero += float((target.pow(2) * batch.mask[:, None]).sum() / count)
    return total / levels, zero / levels


def channel_moments(model: DiT, latents: list[torch.Tensor]) -> dict:
    """Mean and standard deviation of the normalized latents, over all frames and
    channels, and the spread of the per-channel standard deviations."""
    x = torch.cat([model.normalize(z[None])[0] for z in latents], dim=-1)  # [D, frames]
    per_channel = x.std(dim=-1)
    return {"mean": float(x.mean()), "std": float(x.std()),
            "channel_std_min": float(per_channel.min()),
            "channel_std_max": float(per_channel.max()), "frames": x.shape[-1]}


def evaluate(run: Path, train: list[str], test: list[str], manifest: str | None, *,
             windows: int, levels: int, samples: int, seconds: float, seed: int = 0) -> dict:
    model, vocab, meta = load_model(run)
    frames = meta["training"]["frames"]
    sets = {name: load_latent_set(paths, manifest) for name, paths in
            (("train", train), ("test", test))}
    for name, data in sets.items():
        if data.codec_fingerprint != meta["codec_fingerprint"]:
            raise ValueError(f"the {name} latents are of another codec than the run's")
    losses = {name: v_loss(model, vocab, data, frames, windows, levels, seed)
              for name, data in sets.items()}
    rate = meta["frame_rate"]
    length = math.ceil(seconds * rate)
    generated = []
    for index in range(samples):
        prompt = sets["test"].prompts[index % len(sets["test"].prompts)]
        generated.append(generate(model, vocab, prompt, length, rate, seed=index))
    return {"run": str(run), "step": meta["step"], "frames": frames, "seed": seed,
            "windows": windows, "levels": levels,
            "v_loss": {name: value[0] for name, value in losses.items()},
            "v_loss_zero_prediction": {name: value[1] for name, value in losses.items()},
            "generated": {"samples": samples, "seconds": seconds, "frames_asked": length,
                          "frames": [int(g.shape[-1]) for g in generated],
                          "moments": (channel_moments(model, generated) if generated
                                      else None)},
            "test_moments": channel_moments(model, sets["test"].latents)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a latent diffusion run folder")
    parser.add_argument("--train", nargs="+", required=True, help="train latent files")
    parser.add_argument("--test", nargs="+", required=True, help="held-out latent files")
    parser.add_argument("--manifest", help="corpus manifest for the prompts")
    parser.add_argument("-o", "--out", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0,
                        help="draws the windows and the noise of the v-loss")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.run, args.train, args.test, args.manifest,
                          windows=args.windows, levels=args.levels, samples=args.samples,
                          seconds=args.seconds, seed=args.seed)
    except ValueError as error:
        sys.exit(f"error: {error}")
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        with atomic_path(args.out) as temp:
            temp.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
