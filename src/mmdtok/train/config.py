"""The codec trainer's settings: one dataclass, read from JSON (or YAML when PyYAML is
installed) and overridden by ``key=value`` strings from the command line.

Defaults follow EnCodec and the paper (Adam with betas 0.5/0.9, lr 3e-4; loss weights l1
0.1, mel 2, adversarial 4, feature matching 4 through the gradient balancer; the
independence loss every 32 steps with weight 1e3, off unless asked), at a batch size and
length that fit a CPU. ``weights`` may add ``stft``, the multi-resolution STFT loss
(spectral convergence plus log-magnitude distance at FFT sizes 2048 to 256).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.models.codec import CodecConfig
from mmdtok.models.istft import ISTFTConfig
from mmdtok.models.presets import preset


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a codec training run (see the module docstring for defaults)."""

    codec: str = "small-music"  # a preset name
    quantizer: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's
    # quantizer settings, e.g. {"codebook_size": 256, "codebook": {"decay": 0.9}}
    decoder: dict[str, Any] = field(default_factory=dict)  # {}: the preset's decoder;
    # {"istft": {...}}: the frame-rate decoder (mmdtok.models.ISTFTConfig's fields)
    steps: int = 2000
    batch_size: int = 8
    segment_seconds: float = 1.0
    sampling: str = "file"  # each crop's file: "file" (uniform) or "duration" (weighted)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    schedule: str = "cosine"  # "constant" or "cosine" (after warmup)
    warmup_steps: int = 100
    weights: dict[str, float] = field(default_factory=lambda: {
        "l1": 0.1, "mel": 2.0, "adversarial": 4.0, "features": 4.0})
    balancer: bool = True
    commitment_weight: float = 1.0
    codebook_weight: float = 1.0  # of a learned codebook's loss (DAC's; EMA codebooks: none)
    kl_weight: float = 1e-4  # of a VAE bottleneck's KL term (Stable Audio 2's weight)
    adversarial_from: int = 0  # the step from which the discriminator trains and judges
    discriminator_warmup: int = 0  # steps after adversarial_from in which it only trains
    # (a codec fine-tuned from reconstruction losses meets a trained judge, not a random one)
    discriminator_lr: float = 0.0  # the discriminator's learning rate; 0: ``lr``
    discriminator_filters: int = 32
    ema_decay: float = 0.999
    independence: bool = False
    independence_every: int = 32
    independence_weight: float = 1e3
    independence_preset: str = "default"  # an IndependenceLoss preset: "rff" is linear
    independence_pattern: str = ""  # "delay" or "parallel" over the preset's; "": the preset's
    init_from: str = ""  # start from this codec's weights (mmdtok:NAME, folder, Hub id)
    trainable: str = "all"  # "all", or "decoder": the encoder, codebooks and latent norm
    # stay as they are (the codes cannot change), the decoder learns (with codebook dropout)
    valid_fraction: float = 0.05  # of the files of a folder (manifests carry their split)
    valid_every: int = 500  # validation of the moving-average codec; 0: never
    valid_files: int = 16  # the first N validation files ...
    valid_seconds: float = 10.0  # ... each cut to this length
    checkpoint_every: int = 500
    calibration_batches: int = 32  # recalibrate the exported codec's latent norm
    tensorboard: bool = False  # TensorBoard logs in RUN_DIR/logs (pip install tensorboard)
    log_every: int = 10  # training scalars to TensorBoard every N steps
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"; one GPU per rank
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.schedule not in {"constant", "cosine"}:
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "independence_every",
                     "log_every", "valid_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("segment_seconds", "lr"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive number, got "
                                 f"{getattr(self, name)}")
        for name in ("warmup_steps", "adversarial_from", "discriminator_warmup",
                     "discriminator_lr", "calibration_batches",
                     "independence_weight", "commitment_weight", "codebook_weight",
                     "kl_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.valid_fraction < 1:
            raise ValueError(f"ema_decay and valid_fraction must be in [0, 1), got "
                             f"{self.ema_decay} and {self.valid_fraction}")
        if self.valid_every < 0 or self.valid_seconds <= 0:
            raise ValueError("valid_every must be >= 0 and valid_seconds > 0, got "
                             f"{self.valid_every} and {self.valid_seconds}")
        if self.device.split(":")[0] not in {"auto", "cpu", "cuda"}:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.sampling not in {"file", "duration"}:
            raise ValueError(f"sampling must be 'file' or 'duration', got {self.sampling!r}")
        if "kind" in self.quantizer:
            raise ValueError("the quantizer overrides cannot change its kind; choose "
                             "another codec preset")
        if self.independence_pattern not in {"", "delay", "parallel"}:
            raise ValueError("independence_pattern must be '', 'delay' or 'parallel', got "
                             f"{self.independence_pattern!r}")
        if set(self.decoder) - {"istft"} or not isinstance(self.decoder.get("istft", {}),
                                                           dict):
            raise ValueError(f"decoder must be {{}} (the preset's) or {{\"istft\": {{...}}}} "
                             f"(the frame-rate decoder's settings), got {self.decoder!r}")
        if self.decoder:
            self.codec_config()  # its settings are checked here, before any work
        if self.trainable not in {"all", "decoder"}:
            raise ValueError(f"trainable must be 'all' or 'decoder', got {self.trainable!r}")
        if self.trainable == "decoder" and self.independence:
            raise ValueError("the independence loss acts on the encoder, which "
                             "trainable='decoder' keeps fixed: set independence=false")
        unknown = set(self.weights) - {"l1", "mel", "stft", "adversarial", "features"}
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}")

    def codec_config(self) -> CodecConfig:
        """The preset ``codec`` with the ``quantizer`` overrides applied (``"codebook"``
        overrides the preset's codebook options one by one) and the ``decoder`` chosen."""
        base = preset(self.codec)
        if "istft" in self.decoder:
            base = replace(base, istft=ISTFTConfig.from_dict(dict(self.decoder["istft"])))
        if not self.quantizer:
            return base
        merged = {**base.quantizer, **self.quantizer}
        if "codebook" in self.quantizer:
            merged["codebook"] = {**base.quantizer.get("codebook", {}),
                                  **self.quantizer["codebook"]}
        return replace(base, quantizer=merged)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data, "training setting")

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings; values are parsed as JSON when they can be
        (numbers, booleans, lists, objects), else taken as strings."""
        changes: dict[str, Any] = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r} is not key=value")
            try:
                changes[key] = json.loads(text)
            except json.JSONDecodeError:
                changes[key] = text
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def load_config(path: str | Path | None) -> TrainConfig:
    """Settings from a JSON or YAML file, or the defaults."""
    if path is None:
        return TrainConfig()
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the settings file {path}: {error}") from error
    if Path(path).suffix in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError as error:
            raise ValueError("reading YAML needs PyYAML (pip install pyyaml); or use JSON"
                             ) from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings")  # noqa: TRY004
    return TrainConfig.from_dict(data)


__all__ = ["TrainConfig", "load_config"]
