"""The codec training loop, top to bottom: one function per step, state in one object
(:class:`~mmdtok.train.state.Run`).

A run directory (its layout: :class:`mmdtok.persistence.RunFolder`) holds
``config.json`` + ``model.safetensors`` (the moving-average codec, a model folder that
loads as a codec), ``train_config.json``, ``checkpoints/last.pt`` (written atomically every
``checkpoint_every`` steps and at the end), ``validation.jsonl`` (one line of held-out
quality per validation) and, with ``tensorboard=true``, ``logs/``. ``resume=True``
continues from the checkpoint exactly:
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

from mmdtok.atomic import atomic_path
from mmdtok.distributed import rank, world_size
from mmdtok.losses.adversarial import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from mmdtok.losses.spectral import MultiResolutionSTFTLoss
from mmdtok.train.checkpoint import load_checkpoint, save_checkpoint
from mmdtok.train.config import TrainConfig
from mmdtok.train.data import AudioFile, ClipSampler, find_audio
from mmdtok.train.folder import RunFolder
from mmdtok.train.parallel import average_gradients, barrier, step_seed, training_device
from mmdtok.train.state import Run, build_run
from mmdtok.train.tensorboard import TrainLog
from mmdtok.train.validation import evaluate_codec, load_clips, recalibrate_latent_norm

log = logging.getLogger(__name__)


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


_STFT_LOSS = MultiResolutionSTFTLoss()


def reconstruction_losses(run: Run, config: TrainConfig, audio: Tensor, decoded: Tensor,
                          adversarial: bool) -> dict[str, Tensor]:
    losses = {"l1": F.l1_loss(decoded, audio), "mel": run.mel(decoded, audio)}
    if config.weights.get("stft", 0.0) > 0:
        losses["stft"] = _STFT_LOSS(decoded, audio)
    if adversarial:
        fake = run.discriminator(decoded)
        with torch.no_grad():
            real = run.discriminator(audio)
        losses["adversarial"] = hinge_generator_loss(fake.logits)
        losses["features"] = feature_matching_loss(real.features, fake.features)
    return losses


def codec_step(run: Run, config: TrainConfig, audio: Tensor) -> dict[str, float] | None:
    """One generator update; None (and nothing applied) if a loss is not finite."""
    if not torch.isfinite(audio).all():  # corrupt data: never let it reach the codebooks
        return None
    adversarial = run.step >= config.adversarial_from  # the discriminator trains
    judged = run.step >= config.adversarial_from + config.discriminator_warmup
    out = run.model(audio)
    losses = reconstruction_losses(run, config, audio, out.audio, judged)
    commitment = out.quantized.losses.get("commitment", audio.new_zeros(()))
    codebook = out.quantized.losses.get("codebook", audio.new_zeros(()))  # learned codes
    kl = out.quantized.losses.get("kl", audio.new_zeros(()))  # a VAE bottleneck's
    if not all(torch.isfinite(v) for v in [*losses.values(), commitment, codebook, kl]):
        return None
    run.optimizer.zero_grad(set_to_none=True)
    extra = (config.commitment_weight * commitment + config.codebook_weight * codebook
             + config.kl_weight * kl)
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
        "commitment": float(commitment.detach())} | (
        {"kl": float(kl.detach())} if "kl" in out.quantized.losses else {}) | (
        {"codebook": float(codebook.detach())} if "codebook" in out.quantized.losses
        else {}) | {
        k: float(v) for k, v in out.quantized.metrics.items() if k.startswith("perplexity")}
    if run.independence is not None:
        mmd = run.independence.step(audio)
        if mmd is not None:
            values["independence"] = float(mmd.detach())
            # Every rank holds the same loss of the whole macro-batch; this separate pass
            # adds each rank's own part of its gradient, weighted by the world size ...
            (config.independence_weight * world_size() * mmd).backward()
            # ... and since DDP averaged the codec's gradient already, a second average
            # gives the sum.
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
    loss = hinge_discriminator_loss(run.discriminator(audio).logits,
                                    run.discriminator(decoded).logits)
    run.disc_optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        average_gradients(run.discriminator.parameters())
        run.disc_optimizer.step()
    return float(loss.detach())


def _set_lr(run: Run, config: TrainConfig) -> float:
    factor = learning_rate_factor(run.step, config)
    for opt, lr in ((run.optimizer, config.lr),
                    (run.disc_optimizer, config.discriminator_lr or config.lr)):
        for group in opt.param_groups:
            group["lr"] = lr * factor
    return config.lr * factor


def _refill_macro_batch(run: Run, config: TrainConfig, sampler: ClipSampler) -> None:
    """After a resume, re-create the inputs the macro-batch had gathered (batches are a
    function of the step)."""
    if run.independence is None:
        return
    start = run.step - run.step % config.independence_every
    run.independence.refill([sampler.batch(step).to(run.device)
                             for step in range(start, run.step)])


def _open_run(config: TrainConfig, settings: dict, folder: RunFolder, resume: bool,
              device: torch.device) -> Run:
    run = build_run(config, device)
    if resume:
        if not folder.has_checkpoint():
            raise ValueError(f"nothing to resume: {folder.checkpoint} does not exist")
        run.load(load_checkpoint(folder.checkpoint, map_location=run.device), settings)
    elif folder.has_checkpoint():
        raise ValueError(f"{folder.root} already holds a run: resume it, or train into "
                         "another folder")
    return run


class Validation:
    """The held-out clips (loaded once, on rank 0) and where their results go."""

    def __init__(self, files: Sequence[AudioFile], config: TrainConfig, run: Run,
                 folder: RunFolder, board: TrainLog) -> None:
        self.clips = []
        if config.valid_every and rank() == 0:
            paths = [f.path for f in files if f.split == "valid"][: config.valid_files]
            self.clips = load_clips(paths, run.codec.sample_rate, run.codec.channels,
                                    config.valid_seconds)
            if not self.clips:
                log.warning("no validation files: validation is skipped")
        self.folder, self.board, self.listened = folder, board, False

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
        with open(self.folder.validation, "a") as handle:
            handle.write(json.dumps({"step": run.step, **values}) + "\n")
        log.info("step %d validation: SI-SDR %.2f dB, mel distance %.3f", run.step,
                 quality.si_sdr, quality.mel_distance)
        return values


def _recalibrate(run: Run, config: TrainConfig, sampler: ClipSampler) -> None:
    """The finished codec's latent norm takes its own encoder's statistics, measured on
    batches beyond the last step, the same on every rank."""
    batches = (sampler.batch(config.steps + i, rank=0)
               for i in range(config.calibration_batches))
    recalibrate_latent_norm(run.ema.model, batches)


def _save(run: Run, settings: dict, folder: RunFolder) -> None:
    if rank() == 0:
        save_checkpoint(folder.checkpoint, run.state(settings))
        run.ema.model.save_pretrained(folder.root)
    barrier()


def train(config: TrainConfig, sources: Sequence[str | Path], out: str | Path, *,
          resume: bool = False, max_steps: int | None = None,
          device: torch.device | None = None,
          progress: Callable[[int, dict[str, float]], None] = lambda step, values: None
          ) -> Run:
    """Train (or resume) a codec on the audio of ``sources``; writes the run directory.
    ``max_steps`` stops early (the schedule still spans ``config.steps``). ``device``:
    this rank's, when the caller resolved ``config.device`` already. ``progress`` gets
    each step's losses (empty for a skipped step)."""
    folder, settings = RunFolder(Path(out)), config.to_dict()
    files = find_audio(sources, config.valid_fraction)
    run = _open_run(config, settings, folder, resume, device or training_device(config.device))
    if rank() == 0:
        with atomic_path(folder.settings) as temp:
            temp.write_text(json.dumps(settings, indent=2) + "\n")
    board = TrainLog(folder.logs, enabled=config.tensorboard and rank() == 0)
    validate = Validation(files, config, run, folder, board)
    sampler = ClipSampler.from_config([f for f in files if f.split == "train"], config,
                                      sample_rate=run.codec.sample_rate,
                                      channels=run.codec.channels, rank=rank())
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
            if (run.step == config.steps and config.calibration_batches
                    and config.trainable == "all"):  # a fixed encoder keeps its norm
                _recalibrate(run, config, sampler)
            if config.valid_every and (run.step % config.valid_every == 0 or run.step == stop):
                validate(run)
            if run.step % config.checkpoint_every == 0 or run.step == stop:
                _save(run, settings, folder)
    finally:
        board.close()
    return run
