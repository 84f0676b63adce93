"""Train the reference MusicGen-style LM on token files (unconditional: no text, no melody).

    mmdtok encode data/train -o tokens/train
    mmdtok encode data/valid -o tokens/valid
    python -m examples.musicgen_lm.train tokens/train --valid tokens/valid \\
        --pattern delay --frames 150 --steps 2000 -o runs/lm-delay
    python -m examples.musicgen_lm.train tokens/train --head depth ...   # the joint model

Writes OUT/lm.json (the LM's shape, the codec's fingerprint and origin, the settings and
the held-out NLL) and OUT/lm.safetensors, atomically, at the end. AdamW with betas
(0.9, 0.95) and weight decay 0.1, a linear warmup then a cosine decay to 0, gradients
clipped at norm 1; cross-entropy per codebook.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from examples.musicgen_lm.data import TokenSet, WindowSampler, load_token_set, windows
from examples.musicgen_lm.model import HEADS, LMConfig, MusicGenLM, loss_per_codebook, nll_per_frame
from mmdtok.atomic import atomic_path
from mmdtok.train.loop import warmup_cosine


@dataclass(frozen=True)
class LMTraining:
    """Optimization settings."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0


def train_lm(config: LMConfig, training: LMTraining, tokens: TokenSet,
             progress: bool = True) -> tuple[MusicGenLM, list[float]]:
    """Train a fresh LM on random windows of ``tokens``; returns it (eval mode) and the
    training loss (mean over codebooks, nats per code) of every step."""
    if (tokens.num_codebooks, tokens.codebook_size) != (config.num_codebooks,
                                                         config.codebook_size):
        raise ValueError(f"the tokens have {tokens.num_codebooks} x {tokens.codebook_size} "
                         f"codebooks, the LM {config.num_codebooks} x {config.codebook_size}")
    torch.manual_seed(training.seed)
    model = MusicGenLM(config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": training.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=training.lr, betas=(0.9, 0.95))
    sampler = WindowSampler(tokens, config.frames, training.seed)
    history = []
    bar = tqdm(range(training.steps), desc=f"LM ({config.pattern})", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = training.lr * warmup_cosine(step, training.warmup_steps,
                                                       training.steps)
        losses = loss_per_codebook(model, sampler.batch(training.batch_size))
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    return model.eval(), history


def save_lm(out: Path, model: MusicGenLM, tokens: TokenSet, facts: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    info = {"lm": model.config.to_dict(), "codec_fingerprint": tokens.codec_fingerprint,
            "codec_origin": tokens.codec_origin, "frame_rate": tokens.frame_rate, **facts}
    with atomic_path(out / "lm.safetensors") as temp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temp))
    with atomic_path(out / "lm.json") as temp:
        temp.write_text(json.dumps(info, indent=2) + "\n")


def load_lm(run: Path) -> tuple[MusicGenLM, dict]:
    """An LM saved by :func:`save_lm` (safetensors: nothing is unpickled), eval mode."""
    from safetensors.torch import load_file

    info = json.loads((run / "lm.json").read_text())
    model = MusicGenLM(LMConfig(**info["lm"]))
    model.load_state_dict(load_file(str(run / "lm.safetensors")))
    return model.eval(), info


def add_arguments(parser: argparse.ArgumentParser, patterns: tuple[str, ...]) -> None:
    """The data, LM-shape and optimization options shared by ``train`` and ``gap``."""
    parser.add_argument("tokens", nargs="+", help="token files or folders (training)")
    parser.add_argument("--valid", nargs="*", default=[], help="held-out token files/folders")
    parser.add_argument("-o", "--out", type=Path, required=True, help="run folder")
    parser.add_argument("--pattern", default="delay", choices=patterns)
    parser.add_argument("--frames", type=int, default=150, help="context in codec frames")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--depth-dim", type=int, default=128, help="width of the depth head")
    parser.add_argument("--depth-layers", type=int, default=1,
                        help="layers of the depth head")
    for name, value in asdict(LMTraining()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)


def lm_config(args: argparse.Namespace, tokens: TokenSet, head: str) -> LMConfig:
    return LMConfig(tokens.num_codebooks, tokens.codebook_size, args.pattern, args.frames,
                    args.dim, args.layers, args.heads, args.dropout, head, args.depth_dim,
                    args.depth_layers)


def lm_training(args: argparse.Namespace) -> LMTraining:
    """The optimization settings of :func:`add_arguments`' options."""
    return LMTraining(**{k: getattr(args, k) for k in asdict(LMTraining())})


def load_valid(paths: list[str], tokens: TokenSet) -> TokenSet:
    """The held-out token set, refused when another codec made it than ``tokens``."""
    held_out = load_token_set(paths)
    if held_out.codec_fingerprint != tokens.codec_fingerprint:
        raise ValueError("the --valid tokens come from another codec")
    return held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, patterns=("delay", "parallel", "flatten"))
    parser.add_argument("--head", default="factorized", choices=HEADS,
                        help="factorized: K independent heads; depth: the joint depth "
                             "transformer over the K codes of a step (delay, parallel)")
    args = parser.parse_args(argv)
    try:
        tokens = load_token_set(args.tokens)
        config = lm_config(args, tokens, args.head)
        training = lm_training(args)
        model, history = train_lm(config, training, tokens)
        facts = {"training": asdict(training), "final_loss": history[-1]}
        if args.valid:
            held_out = load_valid(args.valid, tokens)
            facts["valid_nll_per_frame"] = nll_per_frame(model, windows(held_out, args.frames))
            print(f"held-out NLL: {facts['valid_nll_per_frame']:.4f} nats per frame")
        save_lm(args.out, model, tokens, facts)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'lm.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
