"""The codec training loop, top to bottom: one function per step, state in one object
(:class:`~mmdtok.train.state.Run`).

A run directory holds ``config.json`` + ``model.safetensors`` (the moving-average codec,
a model folder that ``mmdtok encode --model RUN_DIR`` loads), ``train_config.json``,
``checkpoints/last.pt`` (written atomically every ``checkpoint_every`` steps and at the
end), ``validation.jsonl`` (one line of held-out quality per validation) and, with
``tensorboard=true``, ``logs/``. ``resume=True`` continues from the checkpoint exactly:
batches and every random draw inside a step depend only on (seed, step, rank), and all
other state is in the checkpoint.

Under torch.distributed (started by the caller, e.g. ``torchrun ... mmdtok
train-codec``) every rank trains on its own batches (``batch_size`` per rank) with DDP;
the codebooks, the gradient balancer's norms and the independence loss's macro-batch span
all ranks, and rank 0 writes the run directory. Resuming needs the run directory on a
file system every rank sees.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from mmdtok.distributed import rank
from mmdtok.models.discriminator import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from mmdtok.train.checkpoint import load_checkpoint, save_checkpoint
from mmdtok.train.config import TrainConfig
from mmdtok.train.data import AudioFile, ClipSampler, find_audio
from mmdtok.train.parallel import average_gradients, barrier, step_seed
from mmdtok.train.state import Run, build_run
from mmdtok.train.tensorboard import TrainLog
from mmdtok.train.validation import evaluate_codec, load_clips, recalibrate

log = logging.getLogger(__name__)
CHECKPOINT = Path("checkpoints") / "last.pt"


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine from 1 down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then constant or cosine decay to 0 at ``config.steps``."""
    if config.schedule == "constant" and step >= config.warmup_steps:
        return 1.0
    return warmup_cosine(step, config.warmup_steps, config.steps)


def reconstruction_losses(run: Run, audio: Tensor, decoded: Tensor,
                          adversarial: bool) -> dict[str, Tensor]:
    losses = {"l1": F.l1_loss(decoded, audio), "mel": run.mel(decoded, audio)}
    if adversarial:
        fake = run.discriminator(decoded)
        with torch.no_grad():
            real = run.discriminator(audio)
        losses["adversarial"] = hinge_generator_loss(fake)
        losses["features"] = feature_matching_loss(real, fake)
    return losses


def codec_step(run: Run, config: TrainConfig, audio: Tensor) -> dict[str, float] | None:
    """One generator update; None (and nothing applied) if a loss is not finite."""
    if not torch.isfinite(audio).all():  # corrupt data: never let it reach the codebooks
        return None
    adversarial = run.step >= config.adversarial_from
    out = run.model(audio)
    losses = reconstruction_losses(run, audio, out.audio, adversarial)
    commitment = out.quantized.losses.get("commitment", audio.new_zeros(()))
    if not all(torch.isfinite(v) for v in [*losses.values(), commitment]):
        return None
    run.optimizer.zero_grad(set_to_none=True)
    extra = config.commitment_weight * commitment
    if run.balancer is not None:
        gradient, _ = run.balancer.combine(losses, out.audio)
        # FSQ has no commitment loss: then there is nothing to add
        outputs, grads = ([out.audio, extra], [gradient, torch.ones_like(extra)]) if (
            extra.requires_grad) else ([out.audio], [gradient])
        torch.autograd.backward(outputs, grads)
    else:
        total = sum(config.weights.get(k, 0.0) * v for k, v in losses.items()) + extra
        total.backward()
    values = {k: float(v.detach()) for k, v in losses.items()} | {
        "commitment": float(commitment.detach())} | {
        k: float(v) for k, v in out.quantized.metrics.items() if k.startswith("perplexity")}
    if run.independence is not None:
        mmd = run.independence.step(audio)
        if mmd is not None:
            values["independence"] = float(mmd)
            # DDP averaged the codec's gradient; this pass added each rank's own part
            # (weighted by the world size), so a second average gives the sum.
            average_gradients(run.codec.parameters())
    grads_ok = all(torch.isfinite(p.grad).all() for p in run.codec.parameters()
                   if p.grad is not None)
    if not grads_ok:
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.optimizer.step()
    if adversarial:
        values["discriminator"] = discriminator_step(run, audio, out.audio.detach())
    return values


def discriminator_step(run: Run, audio: Tensor, decoded: Tensor) -> float:
    loss = hinge_discriminator_loss(run.discriminator(audio), run.discriminator(decoded))
    run.disc_optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        average_gradients(run.discriminator.parameters())
        run.disc_optimizer.step()
    return float(loss.detach())


def _set_lr(run: Run, config: TrainConfig) -> float:
    factor = learning_rate_factor(run.step, config)
    for opt in (run.optimizer, run.disc_optimizer):
        for group in opt.param_groups:
            group["lr"] = config.lr * factor
    return config.lr * factor


def _refill_macro_batch(run: Run, config: TrainConfig, sampler: ClipSampler) -> None:
    """After a resume, re-create the inputs the macro-batch had gathered (batches are a
    function of the step)."""
    if run.independence is None:
        return
    start = run.step - run.step % config.independence_every
    run.independence.refill([sampler.batch(step).to(run.device)
                             for step in range(start, run.step)])


def _open_run(config: TrainConfig, out: Path, resume: bool) -> Run:
    run = build_run(config)
    checkpoint = out / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise ValueError(f"nothing to resume: {checkpoint} does not exist")
        run.load(load_checkpoint(checkpoint, map_location=run.device), config)
    elif checkpoint.exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it")
    return run


class Validation:
    """The held-out clips (loaded once, on rank 0) and where their results go."""

    def __init__(self, files: Sequence[AudioFile], config: TrainConfig, run: Run, out: Path,
                 board: TrainLog) -> None:
        self.clips = []
        if config.valid_every and rank() == 0:
            paths = [f.path for f in files if f.split == "valid"][: config.valid_files]
            self.clips = load_clips(paths, run.codec.sample_rate, run.codec.channels,
                                    config.valid_seconds)
            if not self.clips:
                log.warning("no validation files: validation is skipped")
        self.out, self.board, self.listened = out, board, False

    def __call__(self, run: Run) -> dict[str, float]:
        if not self.clips:
            return {}
        quality, decoded = evaluate_codec(run.ema.model, self.clips)
        values = quality.as_dict()
        self.board.scalars("valid", values, run.step)
        self.board.audio("reconstruction", decoded, run.codec.sample_rate, run.step)
        if not self.listened:  # the original once, to compare with
            self.board.audio("original", self.clips[0], run.codec.sample_rate, run.step)
            self.listened = True
        with open(self.out / "validation.jsonl", "a") as handle:
            handle.write(json.dumps({"step": run.step, **values}) + "\n")
        log.info("step %d validation: SI-SDR %.2f dB, mel distance %.3f", run.step,
                 quality.si_sdr, quality.mel_distance)
        return values


def _recalibrate(run: Run, config: TrainConfig, sampler: ClipSampler) -> None:
    """The finished codec standardizes with its own encoder's statistics, measured on
    batches beyond the last step, the same on every rank."""
    batches = (sampler.batch(config.steps + i, rank=0)
               for i in range(config.calibration_batches))
    recalibrate(run.ema.model, batches)


def _save(run: Run, config: TrainConfig, out: Path) -> None:
    if rank() == 0:
        save_checkpoint(out / CHECKPOINT, run.state(config))
        run.ema.model.save_pretrained(out)
    barrier()


def train(config: TrainConfig, sources: Sequence[str | Path], out: str | Path, *,
          resume: bool = False, max_steps: int | None = None,
          progress: Callable[[int, dict[str, float]], None] = lambda step, values: None
          ) -> Run:
    """Train (or resume) a codec on the audio of ``sources``; writes the run directory.
    ``max_steps`` stops early (the schedule still spans ``config.steps``). ``progress``
    gets each step's losses (empty for a skipped step)."""
    out = Path(out)
    files = find_audio(sources, config.valid_fraction)
    run = _open_run(config, out, resume)
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    board = TrainLog(out / "logs", enabled=config.tensorboard and rank() == 0)
    validate = Validation(files, config, run, out, board)
    sampler = ClipSampler([f for f in files if f.split == "train"],
                          sample_rate=run.codec.sample_rate, channels=run.codec.channels,
                          segment=round(config.segment_seconds * run.codec.sample_rate),
                          batch_size=config.batch_size, seed=config.seed, rank=rank())
    _refill_macro_batch(run, config, sampler)
    stop = min(config.steps, max_steps or config.steps)
    try:
        while run.step < stop:
            lr = _set_lr(run, config)
            torch.manual_seed(step_seed(config.seed, run.step, rank()))
            values = codec_step(run, config, sampler.batch(run.step).to(run.device))
            if values is None:
                run.skipped += 1
                log.warning("step %d skipped: a loss or gradient was not finite", run.step)
            else:
                run.ema.update(run.codec)
            run.step += 1
            if values and run.step % config.log_every == 0:
                board.scalars("train", values | {"lr": lr}, run.step)
            progress(run.step, values or {})
            if run.step == config.steps and config.calibration_batches:
                _recalibrate(run, config, sampler)
            if config.valid_every and (run.step % config.valid_every == 0 or run.step == stop):
                validate(run)
            if run.step % config.checkpoint_every == 0 or run.step == stop:
                _save(run, config, out)
    finally:
        board.close()
    return run
