"""Everything a training run changes, in one object that goes into a checkpoint, and the
factory that builds it from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.losses.balancer import GradientBalancer
from mmdtok.losses.spectral import MultiScaleMelLoss
from mmdtok.models import CodecConfig, CodecModel
from mmdtok.models.codec import unfolded_state
from mmdtok.models.discriminator import MultiScaleSTFTDiscriminator
from mmdtok.models.layers import fold_weight_norm
from mmdtok.persistence import Codec, load_codec
from mmdtok.train.checkpoint import WeightEma
from mmdtok.train.config import TrainConfig
from mmdtok.train.parallel import data_parallel

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

    def state(self, settings: dict) -> dict:
        """Everything to resume from; ``settings``: the run's ``TrainConfig.to_dict()``."""
        return {"step": self.step, "skipped": self.skipped, "config": settings,
                "codec": self.codec.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "ema": self.ema.state_dict(),
                "balancer": self.balancer.state_dict() if self.balancer else {},
                "independence": (self.independence.loss.state_dict()
                                 if self.independence else {})}

    def load(self, state: dict, settings: dict) -> None:
        """Continue from ``state``; ValueError when it was written with other settings
        than ``settings`` (``TrainConfig.to_dict()``; runtime settings may differ, the
        message names the others), or is not a checkpoint of this trainer."""
        if (not isinstance(state, dict) or not _CHECKPOINT_KEYS <= state.keys()
                or not isinstance(state["config"], dict)):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the checkpoint is not one of mmdtok's trainer (it holds "
                             f"{found}; expected {sorted(_CHECKPOINT_KEYS)})")
        # a setting added since the checkpoint was written counts as its default
        defaults = TrainConfig().to_dict()
        before = computed_settings({**defaults, **state["config"]})
        now = computed_settings({**defaults, **settings})
        if before != now:
            changed = ", ".join(f"{k}={before.get(k)!r} (now {now.get(k)!r})"
                                for k in sorted(before.keys() | now.keys())
                                if before.get(k) != now.get(k))
            raise ValueError(f"the checkpoint was written with other settings: {changed}; "
                             "resume with the settings the run was started with")
        try:
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
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(f"the checkpoint does not fit this codec and trainer: "
                             f"{first}") from error


_CHECKPOINT_KEYS = frozenset({"step", "skipped", "config", "codec", "discriminator",
                              "optimizer", "disc_optimizer", "ema", "balancer",
                              "independence"})


def computed_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS}


def build_independence(config: TrainConfig, codec: CodecModel
                       ) -> MacroBatchIndependence | None:
    """The independence loss over macro-batches of ``config.independence_every`` steps
    (None when ``config.independence`` is off); its weight is the trainer's."""
    if not config.independence:
        return None
    pattern = {"pattern": config.independence_pattern} if config.independence_pattern else {}
    loss = IndependenceLoss.from_preset(config.independence_preset, seed=config.seed,
                                        **pattern)
    return MacroBatchIndependence(codec.encode_streams, loss, every=config.independence_every)


# Fields that change how a network pads, not its weights: a causal codec may start from
# a centred one's weights (and learn to do without the look-ahead).
PADDING_ONLY = ("causal", "pad_mode", "trim_right_ratio")


def _architecture(config: CodecConfig) -> dict:
    """What two codecs must share for one's weights to start the other: the config
    without its name, the training-only codebook dropout and the padding."""
    data = config.to_dict()
    data.pop("name")
    for field in PADDING_ONLY:
        data.get("seanet", {}).pop(field, None)
    data["quantizer"] = {k: v for k, v in data["quantizer"].items() if k != "codebook_dropout"}
    return data


def start_from(codec: Codec, origin: str, decoder_only: bool = False) -> None:
    """Copy the weights (and codebooks, latent norm) of the codec ``origin`` into
    ``codec``, in float32; ValueError when its architecture differs. ``decoder_only`` (a
    run that trains the decoder alone): the decoder may be another kind (the frame-rate
    one in place of the network's); it then starts fresh and the rest is copied."""
    source = load_codec(origin)
    mine, theirs = _architecture(codec.config), _architecture(source.config)
    new_decoder = decoder_only and ({k: v for k, v in mine.items() if k != "istft"}
                                    == {k: v for k, v in theirs.items() if k != "istft"})
    if mine != theirs and not new_decoder:
        keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise ValueError(f"init_from={origin!r} is another architecture than the codec "
                         f"configured here (they differ in {', '.join(keys)})")
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in source.state_dict().items()
             if not (mine != theirs and k.startswith("decoder."))}
    result = codec.load_state_dict(unfolded_state(state, codec.state_dict()),
                                   strict=mine == theirs)
    if any(not k.startswith("decoder.") for k in result.missing_keys):
        raise ValueError(f"init_from={origin!r} lacks {result.missing_keys[:5]}")


def fix_encoder(codec: Codec) -> None:
    """No gradient to the encoder and quantizer, and no statistics updates in them (their
    submodules in eval mode): every code stays as it is. The quantizer itself stays in
    training mode, so that the decoder still learns under codebook dropout."""
    codec.encoder.requires_grad_(False)
    codec.quantizer.requires_grad_(False)
    codec.encoder.eval()
    for part in codec.quantizer.children():
        part.eval()


def build_run(config: TrainConfig, device: torch.device) -> Run:
    """A fresh run on ``device`` (this rank's; weights drawn from ``config.seed``, the
    same on every rank)."""
    torch.manual_seed(config.seed)
    codec = Codec.from_config(config.codec_config())
    if config.trainable == "decoder":
        # The fixed encoder holds the start's weights as they are, not re-derived from a
        # weight-norm pair (g * v / |v| rounds): it comes out bitwise unchanged.
        fold_weight_norm(codec.encoder)
        fold_weight_norm(codec.quantizer)
    if config.init_from:
        start_from(codec, config.init_from, decoder_only=config.trainable == "decoder")
    codec = codec.to(device)
    codec.train()
    if config.trainable == "decoder":
        fix_encoder(codec)
    disc = MultiScaleSTFTDiscriminator(codec.channels, config.discriminator_filters).to(device)
    optimizer = torch.optim.Adam([p for p in codec.parameters() if p.requires_grad],
                                 lr=config.lr, betas=config.betas)
    disc_optimizer = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    balancer = GradientBalancer(config.weights) if config.balancer else None
    return Run(codec, data_parallel(codec, device), disc, optimizer, disc_optimizer,
               WeightEma(codec, config.ema_decay), balancer, build_independence(config, codec),
               MultiScaleMelLoss(codec.sample_rate).to(device), device)
