"""The codec training loop, top to bottom: one function per step, state in one object.

A run directory holds ``config.json`` + ``model.safetensors`` (the EMA codec, a model
folder that ``mmdtok encode --model RUN_DIR`` loads), ``train_config.json`` and
``checkpoints/last.pt`` (written atomically every ``checkpoint_every`` steps and at the
end). ``resume=True`` continues from the checkpoint exactly: batches depend only on the
step, and every other random state is in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.losses.balancer import GradientBalancer
from mmdtok.losses.spectral import MultiScaleMelLoss
from mmdtok.models import Codec, build_codec
from mmdtok.models.discriminator import (
    MultiScaleSTFTDiscriminator,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from mmdtok.train.checkpoint import WeightEma, load_checkpoint, save_checkpoint
from mmdtok.train.config import TrainConfig
from mmdtok.train.data import ClipSampler, find_audio

log = logging.getLogger(__name__)
CHECKPOINT = Path("checkpoints") / "last.pt"


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then constant or cosine decay to 0 at ``config.steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Run:
    """Everything that changes during training (and goes into a checkpoint)."""

    codec: Codec
    discriminator: MultiScaleSTFTDiscriminator
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    ema: WeightEma
    balancer: GradientBalancer | None
    independence: MacroBatchIndependence | None
    mel: MultiScaleMelLoss
    step: int = 0
    skipped: int = 0

    def state(self, config: TrainConfig) -> dict:
        return {"step": self.step, "skipped": self.skipped, "config": config.to_dict(),
                "codec": self.codec.state_dict(), "discriminator":
                self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "ema": self.ema.state_dict(), "torch_rng": torch.get_rng_state(),
                "balancer": self.balancer.state_dict() if self.balancer else {},
                "independence": (self.independence.loss.state_dict()
                                 if self.independence else {})}

    def load(self, state: dict) -> None:
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.codec.load_state_dict(state["codec"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        if self.balancer:
            self.balancer.load_state_dict(state["balancer"])
        if self.independence:
            self.independence.loss.load_state_dict(state["independence"])


def build_run(config: TrainConfig) -> Run:
    torch.manual_seed(config.seed)
    codec = build_codec(config.codec)
    codec.train()
    disc = MultiScaleSTFTDiscriminator(codec.channels, config.discriminator_filters)
    optimizer = torch.optim.Adam(codec.parameters(), lr=config.lr, betas=config.betas)
    disc_optimizer = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    balancer = GradientBalancer(config.weights) if config.balancer else None
    independence = None
    if config.independence:
        loss = IndependenceLoss.from_preset(config.independence_preset, seed=config.seed)
        independence = MacroBatchIndependence(codec.encode_streams, loss,
                                              every=config.independence_every,
                                              weight=config.independence_weight)
    return Run(codec, disc, optimizer, disc_optimizer, WeightEma(codec, config.ema_decay),
               balancer, independence, MultiScaleMelLoss(codec.sample_rate))


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
    out = run.codec(audio)
    losses = reconstruction_losses(run, audio, out.audio, adversarial)
    commitment = out.quantized.losses.get("commitment", audio.new_zeros(()))
    if not all(torch.isfinite(v) for v in [*losses.values(), commitment]):
        return None
    run.optimizer.zero_grad(set_to_none=True)
    extra = config.commitment_weight * commitment
    if run.balancer is not None:
        gradient, _ = run.balancer.combine(losses, out.audio)
        torch.autograd.backward([out.audio, extra], [gradient, torch.ones_like(extra)])
    else:
        total = sum(config.weights.get(k, 0.0) * v for k, v in losses.items()) + extra
        total.backward()
    values = {k: float(v.detach()) for k, v in losses.items()} | {
        "commitment": float(commitment.detach())}
    if run.independence is not None:
        mmd = run.independence.step(audio)
        if mmd is not None:
            values["independence"] = float(mmd)
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
        run.disc_optimizer.step()
    return float(loss.detach())


def _set_lr(run: Run, config: TrainConfig) -> None:
    factor = learning_rate_factor(run.step, config)
    for opt in (run.optimizer, run.disc_optimizer):
        for group in opt.param_groups:
            group["lr"] = config.lr * factor


def _refill_macro_batch(run: Run, config: TrainConfig, sampler: ClipSampler) -> None:
    """After a resume, re-create the inputs the macro-batch had gathered (batches are a
    function of the step)."""
    if run.independence is None:
        return
    start = run.step - run.step % config.independence_every
    run.independence.refill([sampler.batch(step) for step in range(start, run.step)])


def train(config: TrainConfig, sources: Sequence[str | Path], out: str | Path, *,
          resume: bool = False, max_steps: int | None = None,
          progress: Callable[[int, dict[str, float]], None] = lambda step, values: None
          ) -> Run:
    """Train (or resume) a codec on the audio of ``sources``; writes the run directory.
    ``max_steps`` stops early (the schedule still spans ``config.steps``)."""
    out = Path(out)
    files = [f for f in find_audio(sources, config.valid_fraction) if f.split == "train"]
    run = build_run(config)
    checkpoint = out / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise ValueError(f"nothing to resume: {checkpoint} does not exist")
        state = load_checkpoint(checkpoint)
        if state["config"] != config.to_dict():
            raise ValueError("the checkpoint was written with other settings; resume with "
                             "the same --config and overrides")
        run.load(state)
    elif checkpoint.exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    sampler = ClipSampler(files, sample_rate=run.codec.sample_rate, channels=run.codec.channels,
                          segment=round(config.segment_seconds * run.codec.sample_rate),
                          batch_size=config.batch_size, seed=config.seed)
    _refill_macro_batch(run, config, sampler)
    stop = min(config.steps, max_steps or config.steps)
    while run.step < stop:
        _set_lr(run, config)
        values = codec_step(run, config, sampler.batch(run.step))
        if values is None:
            run.skipped += 1
            log.warning("step %d skipped: a loss or gradient was not finite", run.step)
        else:
            run.ema.update(run.codec)
        run.step += 1
        progress(run.step, values or {})
        if run.step % config.checkpoint_every == 0 or run.step == stop:
            save_checkpoint(checkpoint, run.state(config))
            with torch.random.fork_rng(devices=[]):  # exporting must not move the RNG
                run.ema.model.save_pretrained(out)
    return run
