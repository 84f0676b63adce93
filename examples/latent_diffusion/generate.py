"""Generate music with a trained latent diffusion model: prompt and length in, a latent
file and a WAV out.

    python -m examples.latent_diffusion.generate runs/dit --prompt "piano, strings, no drums" \\
        --seconds 20 --steps 50 --cfg 3 --seed 0 -o samples/piano.wav

The latent has ``ceil(seconds x frame rate)`` frames, generated at once (timing
conditioning: ``seconds_start`` 0, ``seconds_total`` = ``--seconds``); it is written next
to the WAV as a ``.mmdlat`` file of the codec the model was trained on, which decodes it
(``--codec`` to name it when the recorded origin is not reachable; another codec's
weights are refused).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from examples.latent_diffusion.diffusion import guided, sample_dpm_solver
from examples.latent_diffusion.model import Conditioning, DiT, DiTConfig
from examples.latent_diffusion.text import Vocabulary


def load_model(run: str | Path) -> tuple[DiT, Vocabulary, dict]:
    """The EMA model of a training run, its vocabulary and its description."""
    from safetensors.torch import load_file

    run = Path(run)
    if not (run / "dit.json").is_file():
        raise ValueError(f"{run} is not a latent diffusion run (no dit.json)")
    meta = json.loads((run / "dit.json").read_text())
    model = DiT(DiTConfig.from_dict(meta["dit"]))
    model.load_state_dict(load_file(str(run / "dit.safetensors")))
    return model.eval(), Vocabulary(meta["vocabulary"][2:]), meta


@torch.no_grad()
def generate(model: DiT, vocab: Vocabulary, prompt: str, frames: int, frame_rate: float, *,
             steps: int = 50, cfg: float = 3.0, seed: int = 0, seconds_total: float | None = None,
             progress: bool = False) -> torch.Tensor:
    """A codec latent [D, frames] for ``prompt``: DPM-Solver++ (2M) with guidance ``cfg``
    from noise drawn with ``seed``."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    ids = vocab.encode([prompt], model.config.max_words)
    total = frames / frame_rate if seconds_total is None else seconds_total
    cond = Conditioning(ids, torch.zeros(1), torch.tensor([float(total)]))
    velocity = guided(lambda x, t: model(x, t, cond),
                      lambda x, t: model(x, t, cond.without_text()), cfg)
    noise = torch.randn(1, model.config.latent_dim, frames,
                        generator=torch.Generator().manual_seed(seed))
    with tqdm(total=steps, desc="sampling", disable=not progress) as bar:
        x = sample_dpm_solver(velocity, noise, steps, progress=lambda i: bar.update(1))
    return model.denormalize(x)[0]


def main(argv: list[str] | None = None) -> None:
    from mmdtok.audio import write_audio
    from mmdtok.persistence import load_codec, parse_origin
    from mmdtok.tokens import LATENT_SUFFIX, save_latents, token_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training run folder (dit.json)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance scale (1: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codec", help="the codec that decodes (default: as recorded)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the WAV to write")
    args = parser.parse_args(argv)
    try:
        if not args.seconds > 0 or args.steps < 1:
            raise ValueError("--seconds must be positive and --steps at least 1")
        model, vocab, meta = load_model(args.run)
        codec = load_codec(*(parse_origin(meta["codec_origin"]) if args.codec is None
                             else (args.codec, None)))
        if codec.fingerprint() != meta["codec_fingerprint"] or not codec.continuous:
            raise ValueError(f"the codec {codec.origin or args.codec} is not the one the model "
                             f"was trained on (weights {meta['codec_fingerprint']})")
        frames = math.ceil(args.seconds * meta["frame_rate"])
        latent = generate(model, vocab, args.prompt, frames, meta["frame_rate"],
                          steps=args.steps, cfg=args.cfg, seed=args.seed,
                          seconds_total=args.seconds, progress=True)
        length = round(args.seconds * codec.sample_rate)
        audio = codec.decode(latent[None], length=length)[0]
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_latents(args.out.with_suffix(LATENT_SUFFIX), token_file(
        codec, latent, length, source=f"generated: {args.prompt}", dtype="float32"))
    write_audio(args.out, audio, codec.sample_rate)
    print(f"{args.out} ({args.seconds:g} s) and {args.out.with_suffix(LATENT_SUFFIX)}")


if __name__ == "__main__":
    main()
