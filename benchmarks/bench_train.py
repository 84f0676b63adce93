"""Training speed of ``mmdtok train-codec``: steps per second of the small and the
MusicGen 32 kHz presets, with and without the independence loss, in one process.

A step is one generator update (losses, gradient balancer, Adam) plus, with the
discriminator on, one discriminator update, on 1-second crops of the music in
examples/audio. The independence loss runs once every M = 32 steps on the M stored
batches, re-encoded with gradient checkpointing; its cost is timed on one full
macro-batch and spread over the M steps. Prints steps/s and the ratio with / without.

    python benchmarks/bench_train.py                 # CPU (and the GPU when there is one)
    python benchmarks/bench_train.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table

from mmdtok.train.config import TrainConfig
from mmdtok.train.data import ClipSampler, find_audio
from mmdtok.train.loop import codec_step
from mmdtok.train.parallel import training_device
from mmdtok.train.state import build_independence, build_run

AUDIO = Path(__file__).parents[1] / "examples" / "audio"
MACRO = 32


def _sampler(run, config: TrainConfig) -> ClipSampler:
    files = find_audio([AUDIO], valid_fraction=0.0)
    return ClipSampler.from_config(files, config, sample_rate=run.codec.sample_rate,
                                   channels=run.codec.channels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(config: TrainConfig, steps: int) -> tuple[float, float]:
    """(seconds of a plain step, seconds of one macro-batch of the independence loss or
    0), measured after two warm-up steps."""
    plain_config = replace(config, independence=False)  # plain steps: the loss comes apart
    run = build_run(plain_config, training_device(config.device))
    sampler = _sampler(run, config)
    batches = [sampler.batch(i).to(run.device) for i in range(steps + 2)]
    for audio in batches[:2]:
        codec_step(run, plain_config, audio)
    _sync(run.device)
    start = time.perf_counter()
    for audio in batches[2:]:
        codec_step(run, plain_config, audio)
    _sync(run.device)
    plain = (time.perf_counter() - start) / steps
    independence = build_independence(config, run.codec)
    if independence is None:
        return plain, 0.0
    independence.refill([batches[i % len(batches)] for i in range(MACRO - 1)])
    start = time.perf_counter()
    value = independence.step(batches[0])  # the M-th input: one macro-batch ...
    (config.independence_weight * value).backward()  # ... and its own backward pass
    _sync(run.device)
    return plain, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="the small preset only")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    # (preset, batch, timed steps, discriminator from step): 0 = on, as EnCodec trains;
    # 10**9 = off, as the shipped small-music codec was trained on a CPU.
    presets = [("small-music", 8, 6, 10**9), ("small-music", 8, 4, 0)] + (
        [] if args.quick else [("musicgen-32khz", 2, 3, 0)])
    rows = []
    for device in devices:
        for preset, batch, steps, adversarial_from in presets:
            config = TrainConfig(codec=preset, batch_size=batch, segment_seconds=1.0,
                                 independence=True, independence_every=MACRO,
                                 independence_preset="rff", device=device, valid_every=0,
                                 adversarial_from=adversarial_from)
            plain, macro = seconds_per_step(config, steps)
            with_loss = plain + macro / MACRO
            rows.append([device, preset, f"{batch} x 1 s",
                         "on" if adversarial_from == 0 else "off", f"{1 / plain:.2f}",
                         f"{1 / with_loss:.2f}", f"{with_loss / plain:.2f}x",
                         f"{macro:.1f} s"])
            print(rows[-1], flush=True)
    print(markdown_table(["device", "preset", "batch", "discriminator", "steps/s",
                          "steps/s with "
                          "independence (M = 32)", "time ratio", "one macro-batch"], rows))


if __name__ == "__main__":
    main()
