"""A diffusion transformer (DiT) over a continuous codec's latents, conditioned on the
diffusion time, on timing (``seconds_start``, ``seconds_total``, as in Stable Audio 2)
and on a text prompt.

- Latent frames [B, D, T] are projected to the model width and get sinusoidal positions,
  so any length up to what memory allows is one sequence (whole pieces of the corpus).
- The prompt's token embeddings (:mod:`examples.latent_diffusion.text`) are prepended to
  the frames; padding is masked out of attention.
- Time and timing are embedded (sinusoidal features, then an MLP) and summed into one
  vector that modulates every block (adaptive layer norm, zero-initialized gates).
- Attention is ``torch.nn.functional.scaled_dot_product_attention``; with
  ``checkpointing`` each block recomputes its activations in the backward pass.
- The model predicts v (:mod:`examples.latent_diffusion.diffusion`) on latents
  normalized per channel by statistics of the training set, kept in the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from examples.latent_diffusion.text import TextEncoder


@dataclass(frozen=True)
class DiTConfig:
    latent_dim: int = 64
    width: int = 256
    layers: int = 6
    heads: int = 4
    vocab_size: int = 2
    text_width: int = 128
    text_layers: int = 2
    max_words: int = 32
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"width ({self.width}) must be even and a multiple of heads "
                             f"({self.heads})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiTConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DiT settings {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Conditioning:
    """What a sample is generated from: prompt word ids [B, N] (0 = padding), the start
    of the window in its piece and the piece's length, in seconds [B]."""

    text: Tensor
    seconds_start: Tensor
    seconds_total: Tensor

    def without_text(self) -> Conditioning:
        """The unconditional input of classifier-free guidance: no words, same timing."""
        return Conditioning(torch.zeros_like(self.text[:, :1]), self.seconds_start,
                            self.seconds_total)


def sinusoidal(values: Tensor, width: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features [..., width] of scalars ``values`` [...]."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device,
                                                                  dtype=torch.float32) / half)
    angles = values.float()[..., None] * frequencies
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class _Embedding(nn.Module):
    """A scalar -> sinusoidal features -> MLP -> width."""

    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.width, self.scale = width, scale
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, values: Tensor) -> Tensor:
        return self.mlp(sinusoidal(values * self.scale, self.width))


class Block(nn.Module):
    """Pre-norm self-attention and MLP, each modulated by the conditioning vector."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        with torch.no_grad():  # shifts and scales 0, gates 1: each block starts open
            self.modulation.bias.copy_(torch.tensor([0, 0, 1, 0, 0, 1.0]).repeat_interleave(
                width))

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(
            6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        batch, length, width = h.shape
        q, k, v = self.qkv(h).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + gate1 * self.out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class DiT(nn.Module):
    """v-prediction ``forward(x_t [B, D, T], t [B], cond, frame_mask [B, T]) -> [B, D, T]``."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.text = TextEncoder(config.vocab_size, config.text_width, config.text_layers,
                                max_words=config.max_words)
        self.text_projection = nn.Linear(config.text_width, width)
        self.frames_in = nn.Linear(config.latent_dim, width)
        self.time = _Embedding(width, 1000.0)  # t in [0, 1]
        self.start = _Embedding(width, 1.0)  # seconds
        self.total = _Embedding(width, 1.0)
        self.blocks = nn.ModuleList(Block(width, config.heads) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.frames_out = nn.Linear(width, config.latent_dim)
        for layer in (self.final_modulation, self.frames_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.latent_dim))

    def set_latent_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp(min=1e-5))

    def normalize(self, latents: Tensor) -> Tensor:
        """Codec latents [B, D, T] -> the unit-scale latents the model diffuses."""
        return (latents - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.latent_std[:, None] + self.latent_mean[:, None]

    def forward(self, x: Tensor, t: Tensor, cond: Conditioning,
                frame_mask: Tensor | None = None) -> Tensor:
        batch, _, frames = x.shape
        words, word_mask = self.text(cond.text)
        if frame_mask is None:
            frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=x.device)
        positions = sinusoidal(torch.arange(frames, device=x.device), self.config.width)
        h = torch.cat([self.text_projection(words),
                       self.frames_in(x.transpose(1, 2)) + positions], dim=1)
        mask = torch.cat([word_mask, frame_mask], dim=1)
        c = self.time(t) + self.start(cond.seconds_start) + self.total(cond.seconds_total)
        for block in self.blocks:
            if self.config.checkpointing and self.training:
                h = checkpoint(block, h, c, mask, use_reentrant=False)
            else:
                h = block(h, c, mask)
        h = h[:, words.shape[1]:]
        shift, scale = self.final_modulation(c)[:, None].chunk(2, dim=-1)
        return self.frames_out(self.final_norm(h) * (1 + scale) + shift).transpose(1, 2)
