"""A frame-rate decoder that synthesizes with an inverse STFT: Vocos' design (Siuzdak
2023), in mmdtok's layers.

Latent [B, D, T] -> a zero-padded convolution of kernel 7 to ``dim`` channels -> layer
norm -> ``blocks`` ConvNeXt blocks -> layer norm -> the ISTFT head (a complex spectrum of
``n_fft / 2 + 1`` bins a frame, inverse STFT at the codec's hop) -> audio
[B, C, T * hop]. All the learned arithmetic runs at the frame rate; the only work at the
sample rate is the inverse STFT's fixed overlap-add.

Its receptive field is bounded (3 frames a layer, the window's overlap at the end), so
``decode_many`` runs it in exact chunks. It is centred (each layer looks 3 frames ahead,
the window half a window), so it does not stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mmdtok.configuration import config_from_dict, config_to_dict
from mmdtok.models.layers import Conv1d
from mmdtok.models.layers.convnext import ChannelNorm, ConvNeXtBlock
from mmdtok.models.layers.istft import ISTFTHead
from mmdtok.models.runtime.stack import LayerStack


@dataclass(frozen=True)
class ISTFTConfig:
    """The frame-rate decoder's architecture (Vocos' names in brackets).

    dim: width of the ConvNeXt blocks [dim]; intermediate: their expansion
    [intermediate_dim]; blocks [num_layers]; kernel_size of the depthwise convolutions
    (Vocos: 7); n_fft: the inverse STFT's window (Vocos' EnCodec model: 4 hops); the hop
    is the codec's. layer_scale: the blocks' initial scale, 0 for ``1 / blocks``.

    The defaults are sized for a CPU: 2.1 M parameters, about 3x faster than the SEANet
    decoder of ``small-music`` at batch 1 (``benchmarks/bench_codec.py``); Vocos' own
    EnCodec model is ``dim=384, intermediate=1152`` (7.8 M).
    """

    dim: int = 192
    intermediate: int = 576
    blocks: int = 8
    kernel_size: int = 7
    n_fft: int = 1280
    layer_scale: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "intermediate", "blocks", "kernel_size", "n_fft"):
            if getattr(self, name) < 1:
                raise ValueError(f"ISTFT decoder {name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.dim > 65_536 or self.intermediate > 262_144 or self.blocks > 256 or (
                self.n_fft > 65_536):
            raise ValueError(f"ISTFT decoder sizes out of bounds: {self}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ISTFTConfig:
        return config_from_dict(cls, data, "ISTFT decoder config")


class ISTFTDecoder(LayerStack):
    """Latent [B, D, T] -> audio [B, C, T * hop] (Vocos' backbone and ISTFT head)."""

    def __init__(self, cfg: ISTFTConfig, latent_dim: int, hop: int, channels: int) -> None:
        super().__init__()
        scale = cfg.layer_scale or 1 / cfg.blocks
        layers: list[nn.Module] = [
            Conv1d(latent_dim, cfg.dim, 7, pad_mode="constant", norm="none"),
            ChannelNorm(cfg.dim),
            *[ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel_size, scale)
              for _ in range(cfg.blocks)],
            ChannelNorm(cfg.dim),
            ISTFTHead(cfg.dim, cfg.n_fft, hop, channels)]
        self.layers = nn.ModuleList(layers)
        for module in self.modules():  # Vocos' initialization
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)


__all__ = ["ISTFTConfig", "ISTFTDecoder"]
