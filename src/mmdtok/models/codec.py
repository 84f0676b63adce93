"""A codec is encoder + quantizer + decoder: audio [B, C, L] <-> codes [B, K, T]."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmdtok.models import time_major
from mmdtok.models.layers import fold_weight_norm
from mmdtok.models.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from mmdtok.quantizers import FSQ, ProductVQ, Quantizer, QuantizerOutput, ResidualVQ

QUANTIZERS: dict[str, type[Quantizer]] = {"rvq": ResidualVQ, "pvq": ProductVQ, "fsq": FSQ}


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to rebuild a codec; round-trips through JSON (``to_dict``).

    quantizer: ``{"kind": "rvq" | "pvq" | "fsq", **keywords}``; the keywords go to the
        quantizer's constructor (``dim`` is the SEANet dimension).
    """

    name: str
    sample_rate: int
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: dict[str, Any] = field(
        default_factory=lambda: {"kind": "rvq", "num_codebooks": 4, "codebook_size": 2048})

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        kind = self.quantizer.get("kind")
        if kind not in QUANTIZERS:
            raise ValueError(f"quantizer kind must be one of {sorted(QUANTIZERS)}, got {kind!r}")

    @property
    def channels(self) -> int:
        return self.seanet.channels

    @property
    def hop_length(self) -> int:
        return self.seanet.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sample_rate": self.sample_rate,
                "seanet": self.seanet.to_dict(), "quantizer": dict(self.quantizer)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        missing = {"name", "sample_rate"} - set(data)
        if missing:
            raise ValueError(f"codec config lacks {sorted(missing)}")
        return cls(name=str(data["name"]), sample_rate=int(data["sample_rate"]),
                   seanet=SEANetConfig.from_dict(dict(data.get("seanet", {}))),
                   quantizer=dict(data.get("quantizer", {"kind": "rvq"})))


def build_quantizer(config: CodecConfig) -> Quantizer:
    options = {k: v for k, v in config.quantizer.items() if k != "kind"}
    cls = QUANTIZERS[config.quantizer["kind"]]
    try:
        return cls(dim=config.seanet.dimension, **options)
    except TypeError as error:
        raise ValueError(f"bad options for quantizer {config.quantizer['kind']!r}: "
                         f"{error}") from error


@dataclass(frozen=True)
class CodecOutput:
    """What ``Codec.forward`` returns in training.

    audio: [B, C, L] reconstruction (same length as the input).
    latent: [B, D, T] encoder output. quantized: the quantizer's output (codes, streams,
    losses, metrics).
    """

    audio: Tensor
    latent: Tensor
    quantized: QuantizerOutput


class Codec(nn.Module):
    """Encoder + quantizer + decoder.

    ``encode(audio [B, C, L]) -> codes [B, K, ceil(L / hop)]`` and
    ``decode(codes) -> audio [B, C, T * hop]`` run the whole input in one pass; long
    files and lists of files go through :mod:`mmdtok.models.streaming` instead, which
    gives the same codes in bounded memory.
    """

    def __init__(self, encoder: SEANetEncoder, quantizer: Quantizer, decoder: SEANetDecoder,
                 config: CodecConfig) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.config = config
        self.origin = ""  # where the weights were loaded from (folder, or repo@commit)

    @classmethod
    def from_config(cls, config: CodecConfig) -> Codec:
        return cls(SEANetEncoder(config.seanet), build_quantizer(config),
                   SEANetDecoder(config.seanet), config)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], revision: str | None = None,
                        **options: Any) -> Codec:
        """Load a codec from a local folder or a Hugging Face Hub repository id, in
        mmdtok's format or EnCodec's (transformers layout, converted on load). Options:
        ``cache_dir``, ``local_files_only``, ``inference`` (default True: eval mode with
        weight norm folded); see :func:`mmdtok.models.pretrained.load_pretrained`."""
        from mmdtok.models.pretrained import load_pretrained

        return load_pretrained(name_or_dir, revision, **options)

    @classmethod
    def bundled(cls, name: str = "small-music", **options: Any) -> Codec:
        """A codec shipped inside the package, loaded without any download (``small-music``
        is the default codec of ``mmdtok encode``); see
        :func:`mmdtok.models.pretrained.load_bundled`."""
        from mmdtok.models.pretrained import load_bundled

        return load_bundled(name, **options)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to ``folder``."""
        from mmdtok.models.pretrained import save_pretrained

        return save_pretrained(self, folder)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload the model folder to the Hub (``revision``, ``private``, ``token``,
        ``commit_message``); returns the commit URL."""
        from mmdtok.models.pretrained import push_to_hub

        return push_to_hub(self, repo_id, **options)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def check_audio(self, audio: Tensor) -> None:
        if not isinstance(audio, Tensor):
            raise TypeError(f"audio must be a tensor [B, C, L], got {type(audio).__name__}")
        if audio.dim() != 3 or audio.shape[1] != self.channels or audio.shape[-1] == 0:
            raise ValueError(f"audio must be [B, {self.channels}, L>0] for this "
                             f"{self.channels}-channel codec, got {tuple(audio.shape)}")
        if not audio.is_floating_point():
            raise TypeError(f"audio must be floating point, got {audio.dtype}")

    def forward(self, audio: Tensor) -> CodecOutput:
        """Training pass: reconstruction, latent and quantizer output."""
        self.check_audio(audio)
        latent = self.encoder(audio)
        quantized = self.quantizer(latent)
        decoded = self.decoder(quantized.quantized)[..., : audio.shape[-1]]
        return CodecOutput(audio=decoded, latent=latent, quantized=quantized)

    def encode_streams(self, audio: Tensor) -> Tensor:
        """Per-codebook streams [B, K, D_k, T] with gradients to the encoder, without
        updating codebook statistics: what :class:`~mmdtok.IndependenceLoss` takes."""
        self.check_audio(audio)
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer(self.encoder(audio)).streams
        finally:
            self.quantizer.train(was_training)

    @torch.inference_mode()
    def encode(self, audio: Tensor, n_q: int | None = None) -> Tensor:
        """Codes [B, K, T] (K = ``n_q`` or all) of audio [B, C, L] at ``sample_rate``."""
        self.check_audio(audio)
        return self.quantizer.encode(self.encoder(audio), n_q)

    @torch.inference_mode()
    def decode(self, codes: Tensor, length: int | None = None) -> Tensor:
        """Audio [B, C, T * hop] (or the first ``length`` samples) from codes [B, K', T];
        K' <= K codebooks (a prefix) is a lower bitrate."""
        audio = self.decoder(self.quantizer.decode(codes))
        return audio if length is None else audio[..., :length]

    def for_inference(self) -> Codec:
        """Eval mode with weight norm folded into plain weights (same output, faster).
        In place; returns ``self``."""
        self.eval()
        fold_weight_norm(self)
        time_major.clear_cache(self)
        self.encoder.time_major = self.decoder.time_major = True
        return self

    def fingerprint(self) -> str:
        """A hash of the weights as used for inference (independent of weight norm
        being folded or not): token files carry it so that decoding with other weights
        is refused."""
        state = _folded_state(self.state_dict())
        digest = hashlib.sha256()
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def _folded_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with each weight-norm pair (g, v) replaced by ``g * v / ||v||`` (norm
    over all but the first axis, as torch's weight norm with dim 0): the weights of the
    folded model, computed without building one (and without touching any RNG). A state
    without weight norm comes back unchanged."""
    folded = {}
    for name, tensor in state.items():
        if name.endswith(".parametrizations.weight.original1"):
            prefix = name[: -len(".parametrizations.weight.original1")]
            g = state[f"{prefix}.parametrizations.weight.original0"]
            # the function torch's weight-norm parametrization calls: bit-identical
            folded[f"{prefix}.weight"] = torch._weight_norm(tensor, g, 0)
        elif not name.endswith(".parametrizations.weight.original0"):
            folded[name] = tensor
    return folded


def load_codec_state(codec: Codec, state: dict[str, Tensor]) -> Codec:
    """Load weights saved with or without weight norm (folded) into ``codec``; a folded
    state folds the codec first. Raises ValueError naming missing or unexpected keys."""
    folded_state = not any(".parametrizations." in name for name in state)
    if folded_state:
        fold_weight_norm(codec)
    result = codec.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights do not match the codec config: missing "
                         f"{result.missing_keys[:5]}, unexpected "
                         f"{result.unexpected_keys[:5]}")
    return codec
