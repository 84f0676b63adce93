"""Train the latent diffusion transformer on a continuous codec's latent files.

    mmdtok encode data/real -o latents/ --model runs/vae          # .mmdlat files
    python -m examples.latent_diffusion.train latents/ --manifest data/real/manifest.jsonl \\
        -o runs/dit --frames 256 --steps 2000
    python -m examples.latent_diffusion.train latents/ ... -o runs/dit --resume

The v-objective on a cosine schedule (t uniform in [0, 1]); the prompt is dropped (all
padding) for ``--cond-dropout`` of the samples so that one model is also the
unconditional model of classifier-free guidance; the timing is always given. AdamW (lr
1e-4, weight decay 1e-3, as in Stable Audio 2) after a linear warmup, gradients clipped
at norm 1, an EMA of the weights (decay 0.999) is what ``generate`` uses.

Writes OUT/dit.json (the model's shape, vocabulary, codec fingerprint and origin,
settings, losses) and OUT/dit.safetensors (the EMA weights), atomically, at every
checkpoint and at the end; OUT/checkpoint.pt holds the optimizer and random states so
that ``--resume`` continues exactly (read with ``weights_only=True``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from examples.latent_diffusion.data import Batch, CropSampler, LatentSet, load_latent_set
from examples.latent_diffusion.diffusion import noisy
from examples.latent_diffusion.model import Conditioning, DiT, DiTConfig
from examples.latent_diffusion.text import Vocabulary
from mmdtok.atomic import atomic_path
from mmdtok.train.loop import warmup_cosine


@dataclass(frozen=True)
class DiffusionTraining:
    steps: int = 2000
    batch_size: int = 8
    frames: int = 256
    lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-3
    cond_dropout: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0


def diffusion_loss(model: DiT, batch: Batch, ids: torch.Tensor, drop: torch.Tensor
                   ) -> torch.Tensor:
    """Mean squared error of the v-prediction over the real frames of ``batch``; the
    rows where ``drop`` is True have their prompt removed."""
    x0 = model.normalize(batch.latents) * batch.mask[:, None]
    t = torch.rand(x0.shape[0])
    x_t, target = noisy(x0, torch.randn_like(x0), t)
    ids = torch.where(drop[:, None], torch.zeros_like(ids), ids)
    cond = Conditioning(ids, batch.seconds_start, batch.seconds_total)
    error = (model(x_t, t, cond, batch.mask) - target).pow(2) * batch.mask[:, None]
    return error.sum() / (batch.mask.sum() * x0.shape[1])


def _describe(model: DiT, vocab: Vocabulary, data: LatentSet, training: DiffusionTraining,
              step: int, losses: list[float]) -> dict:
    return {"dit": model.config.to_dict(), "vocabulary": vocab.tokens,
            "codec_fingerprint": data.codec_fingerprint, "codec_origin": data.codec_origin,
            "frame_rate": data.frame_rate, "training": asdict(training), "step": step,
            "losses": losses}


def _write(out: Path, model: DiT, ema: DiT, optimizer, sampler: CropSampler, meta: dict
           ) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "dit.safetensors") as temp:
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(temp))
    with atomic_path(out / "checkpoint.pt") as temp:
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                    "sampler_rng": sampler.generator.get_state(), "step": meta["step"],
                    "losses": meta["losses"]}, temp)
    with atomic_path(out / "dit.json") as temp:  # last: it marks a complete checkpoint
        temp.write_text(json.dumps(meta, indent=2) + "\n")


def train_dit(data: LatentSet, config: DiTConfig, training: DiffusionTraining, out: Path,
              resume: bool = False, progress: bool = True) -> tuple[DiT, list[float]]:
    """Train (or resume) the model; returns the EMA model (eval mode) and the training
    loss of every step."""
    vocab = Vocabulary.from_prompts(data.prompts)
    config = DiTConfig(**{**config.to_dict(), "latent_dim": data.latent_dim,
                          "vocab_size": len(vocab)})
    torch.manual_seed(training.seed)
    model = DiT(config)
    model.set_latent_statistics(*data.statistics())
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr,
                                  weight_decay=training.weight_decay)
    sampler = CropSampler(data, training.frames, training.seed)
    step, losses = 0, []
    if resume:
        meta = json.loads((out / "dit.json").read_text())
        if meta["training"] != asdict(training) or meta["dit"] != config.to_dict():
            raise ValueError(f"{out} was trained with other settings; resume with the same "
                             "settings or choose another output folder")
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        sampler.generator.set_state(state["sampler_rng"])
        step, losses = state["step"], list(state["losses"])
    model.train()
    with tqdm(total=training.steps, initial=step, desc="diffusion", disable=not progress) as bar:
        while step < training.steps:
            for group in optimizer.param_groups:
                group["lr"] = training.lr * warmup_cosine(step, training.warmup_steps,
                                                          training.steps)
            batch = sampler.batch(training.batch_size)
            ids = vocab.encode(batch.prompts, config.max_words)
            drop = torch.rand(len(batch.prompts)) < training.cond_dropout
            loss = diffusion_loss(model, batch, ids, drop)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - training.ema_decay)
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % training.checkpoint_every == 0 or step == training.steps:
                _write(out, model, ema, optimizer, sampler,
                       _describe(model, vocab, data, training, step, losses))
    return ema.eval(), losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("latents", nargs="+", type=Path, help="latent files or folders")
    parser.add_argument("--manifest", type=Path, help="corpus manifest for the prompts")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    for name, value in asdict(DiffusionTraining()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    for name in ("width", "layers", "heads", "text_width", "text_layers", "max_words"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(DiTConfig(), name))
    parser.add_argument("--checkpointing", action="store_true",
                        help="recompute each block's activations in the backward pass")
    args = parser.parse_args(argv)
    try:
        data = load_latent_set(args.latents, args.manifest)
        training = DiffusionTraining(**{k: getattr(args, k) for k in asdict(DiffusionTraining())})
        config = DiTConfig(width=args.width, layers=args.layers, heads=args.heads,
                           text_width=args.text_width, text_layers=args.text_layers,
                           max_words=args.max_words, checkpointing=args.checkpointing)
        if args.resume and not (args.out / "dit.json").exists():
            raise ValueError(f"nothing to resume in {args.out}")
        if not args.resume and (args.out / "dit.json").exists():
            raise ValueError(f"{args.out} holds a run already: pass --resume or choose "
                             "another folder")
        _, losses = train_dit(data, config, training, args.out, resume=args.resume)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"{len(data.latents)} files, {training.steps} steps, final loss "
          f"{sum(losses[-50:]) / len(losses[-50:]):.4f} (mean of the last 50)")


if __name__ == "__main__":
    main()
