"""The continuous family's costs, one process: the VAE autoencoder's encode and decode
against the discrete default codec on the same audio, and the latent diffusion model's
training step.

1. ``small-vae`` (44.1 kHz stereo, 21.5 latent frames/s) and the shipped ``small-music``
   (24 kHz mono, 75 frames/s) encode and decode the same 10 s of music at batch 1,
   interleaved; printed: latent (or code) frames per second of compute, real-time factors,
   and the ratio of audio seconds per compute second, VAE / discrete.
2. The DiT of ``examples/latent_diffusion`` at the example's default size (256 wide, 6
   layers, 4 heads, 256 frames = 11.9 s of ``small-vae`` latents, batch 8): training steps
   per second (forward, v-loss, backward, AdamW), with and without gradient checkpointing;
   and one training step on a whole 4-minute piece (5,200 frames, batch 1): its time and
   peak memory with and without checkpointing.

    python benchmarks/bench_latent.py [--vae runs/vae/main] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from common import compare, markdown_table
from memory import peak_memory

from examples.latent_diffusion.data import Batch
from examples.latent_diffusion.model import DiT, DiTConfig
from examples.latent_diffusion.train import diffusion_loss
from mmdtok import Codec
from mmdtok.audio import resample
from mmdtok.testing import notes

SECONDS = 10.0


def _codec_rows(vae: Codec, discrete: Codec, repeats: int) -> list[list[str]]:
    music = notes(SECONDS, 48_000, seed=1, channels=2)
    inputs = {}
    for name, codec in (("vae", vae), ("discrete", discrete)):
        audio = music if codec.channels == 2 else music.mean(dim=0, keepdim=True)
        inputs[name] = resample(audio, 48_000, codec.sample_rate)[None].contiguous()
    latents = {"vae": vae.encode(inputs["vae"]), "discrete": discrete.encode(inputs["discrete"])}
    encode = compare(lambda: vae.encode(inputs["vae"]),
                     lambda: discrete.encode(inputs["discrete"]), repeats=repeats)
    decode = compare(lambda: vae.decode(latents["vae"]),
                     lambda: discrete.decode(latents["discrete"]), repeats=repeats)
    rows = []
    for step, (t_vae, t_discrete) in (("encode", encode), ("decode", decode)):
        frames_vae = latents["vae"].shape[-1] / t_vae
        frames_discrete = latents["discrete"].shape[-1] / t_discrete
        rows.append([step, f"{frames_vae:,.0f}", f"{SECONDS / t_vae:.0f}x",
                     f"{frames_discrete:,.0f}", f"{SECONDS / t_discrete:.0f}x",
                     f"{t_discrete / t_vae:.2f}x"])
        print(rows[-1], flush=True)
    return rows


def _dit_step(config: DiTConfig, batch: Batch, ids: torch.Tensor):
    torch.manual_seed(0)
    model = DiT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    drop = torch.zeros(batch.latents.shape[0], dtype=torch.bool)

    def step() -> None:
        loss = diffusion_loss(model, batch, ids, drop)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", help="a trained small-vae model folder (default: the "
                                      "preset's fresh weights: the same cost)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    vae = (Codec.from_pretrained(args.vae) if args.vae else
           Codec.from_preset("small-vae").for_inference())
    discrete = Codec.bundled()
    rows = _codec_rows(vae, discrete, args.repeats)
    print(markdown_table(["batch 1, 10 s", "small-vae frames/s", "small-vae real time",
                          f"{discrete.config.name} frames/s",
                          f"{discrete.config.name} real time",
                          "audio per compute, vae / discrete"], rows))

    frames, size = 256, 8
    gen = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(size, 64, frames, generator=gen),
                  torch.ones(size, frames, dtype=torch.bool), [""] * size,
                  torch.zeros(size), torch.full((size,), 60.0))
    ids = torch.randint(2, 40, (size, 12), generator=gen)
    plain, params = _dit_step(DiTConfig(vocab_size=40), batch, ids)
    checkpointed, _ = _dit_step(DiTConfig(vocab_size=40, checkpointing=True), batch, ids)
    seconds_plain, seconds_checkpointed = compare(plain, checkpointed, repeats=args.repeats,
                                                  warmup=1)
    print(markdown_table(
        ["DiT (256 wide, 6 layers, batch 8 x 256 frames)", "parameters", "steps/s",
         "latent frames/s", "checkpointing / plain"],
        [["training step", f"{params / 1e6:.1f} M", f"{1 / seconds_plain:.2f}",
          f"{size * frames / seconds_plain:,.0f}",
          f"{seconds_checkpointed / seconds_plain:.2f}x"]]))

    whole = 5_200  # a 4-minute piece at 21.5 frames/s, in one sequence
    piece = Batch(torch.randn(1, 64, whole, generator=gen), torch.ones(1, whole, dtype=torch.bool),
                  [""], torch.zeros(1), torch.full((1,), whole / 21.5))
    rows = []
    for label, checkpointing in (("plain", False), ("checkpointing", True)):
        step, _ = _dit_step(DiTConfig(vocab_size=40, checkpointing=checkpointing), piece,
                            ids[:1])
        step()  # warm up
        seconds, peak = peak_memory(step)
        rows.append([label, f"{seconds:.1f} s", f"{peak / 2**20:,.0f} MiB"])
        print(rows[-1], flush=True)
    print(markdown_table([f"DiT, one step on {whole:,} frames (batch 1)", "time",
                          "peak memory above baseline"], rows))


if __name__ == "__main__":
    main()
