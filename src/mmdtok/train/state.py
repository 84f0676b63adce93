"""Everything a training run changes, in one object that goes into a checkpoint, and the
factory that builds it from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.losses.balancer import GradientBalancer
from mmdtok.losses.spectral import MultiScaleMelLoss
from mmdtok.models import Codec
from mmdtok.models.discriminator import MultiScaleSTFTDiscriminator
from mmdtok.train.checkpoint import WeightEma
from mmdtok.train.config import TrainConfig
from mmdtok.train.parallel import data_parallel, training_device

# Settings that do not change what is computed: a run may resume with other values.
RUNTIME_SETTINGS = frozenset({"device", "tensorboard", "log_every", "valid_every",
                              "valid_files", "valid_seconds", "checkpoint_every"})


@dataclass
class Run:
    """The codec (``model`` is the same codec, in DDP under torch.distributed), the
    discriminator, their optimizers, the weight average, the loss helpers and counters."""

    codec: Codec
    model: nn.Module
    discriminator: MultiScaleSTFTDiscriminator
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    ema: WeightEma
    balancer: GradientBalancer | None
    independence: MacroBatchIndependence | None
    mel: MultiScaleMelLoss
    device: torch.device
    step: int = 0
    skipped: int = 0

    def state(self, config: TrainConfig) -> dict:
        return {"step": self.step, "skipped": self.skipped, "config": config.to_dict(),
                "codec": self.codec.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "ema": self.ema.state_dict(),
                "balancer": self.balancer.state_dict() if self.balancer else {},
                "independence": (self.independence.loss.state_dict()
                                 if self.independence else {})}

    def load(self, state: dict, config: TrainConfig) -> None:
        if computed_settings(state["config"]) != computed_settings(config.to_dict()):
            raise ValueError("the checkpoint was written with other settings; resume with "
                             "the same --config and overrides")
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.codec.load_state_dict(state["codec"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.ema.load_state_dict(state["ema"])
        if self.balancer:
            self.balancer.load_state_dict(state["balancer"])
        if self.independence:
            self.independence.loss.load_state_dict(state["independence"])


def computed_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS}


def build_run(config: TrainConfig) -> Run:
    """A fresh run on this rank's device (weights drawn from ``config.seed``, the same on
    every rank)."""
    device = training_device(config.device)
    torch.manual_seed(config.seed)
    codec = Codec.from_config(config.codec_config()).to(device)
    codec.train()
    disc = MultiScaleSTFTDiscriminator(codec.channels, config.discriminator_filters).to(device)
    optimizer = torch.optim.Adam(codec.parameters(), lr=config.lr, betas=config.betas)
    disc_optimizer = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    balancer = GradientBalancer(config.weights) if config.balancer else None
    independence = None
    if config.independence:
        loss = IndependenceLoss.from_preset(config.independence_preset, seed=config.seed)
        independence = MacroBatchIndependence(codec.encode_streams, loss,
                                              every=config.independence_every,
                                              weight=config.independence_weight)
    return Run(codec, data_parallel(codec, device), disc, optimizer, disc_optimizer,
               WeightEma(codec, config.ema_decay), balancer, independence,
               MultiScaleMelLoss(codec.sample_rate).to(device), device)
