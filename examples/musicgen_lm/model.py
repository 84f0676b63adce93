"""A compact MusicGen-style transformer LM over K parallel code streams (unconditional).

The codes of a clip, [B, K, T] in [0, C), are laid out by a pattern of
``mmdtok.patterns`` and predicted step by step:

- "parallel" and "delay" (factorized): one step holds K codes, the transformer reads the
  sum of K embeddings and K output heads predict the K codes of the next step
  *independently* given the past. Exact only when the K codes of a step are independent
  given the past: the gap :class:`~mmdtok.IndependenceLoss` closes.
- "flatten" (the joint model): one code per step, K * T steps; the head of the codebook
  due at each step predicts it, so every code sees all codes before it. Exact, K times
  longer sequences.

Input at step s is the step s - 1 (teacher forcing), with the special token ``C`` as the
start and as the padding that the delay pattern leaves; padded targets carry no loss.
Every code of the clip is predicted exactly once under every pattern, so
:func:`nll_per_frame` is comparable across patterns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdtok import patterns

IGNORE = -100  # target value that carries no loss (padding)


@dataclass(frozen=True)
class LMConfig:
    """The LM's shape; ``frames`` is the context, in codec frames."""

    num_codebooks: int
    codebook_size: int
    pattern: str = "delay"
    frames: int = 150
    dim: int = 256
    layers: int = 4
    heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.pattern not in patterns.PATTERNS:
            raise ValueError(f"pattern must be one of {patterns.PATTERNS}, got {self.pattern!r}")
        if self.num_codebooks < 1 or self.codebook_size < 2 or self.frames < 1:
            raise ValueError("num_codebooks >= 1, codebook_size >= 2 and frames >= 1 needed, "
                             f"got {self.num_codebooks}, {self.codebook_size}, {self.frames}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")

    @property
    def steps(self) -> int:
        return patterns.num_steps(self.pattern, self.num_codebooks, self.frames)

    @property
    def streams(self) -> int:
        """Codes per step: K, or 1 for "flatten"."""
        return 1 if self.pattern == "flatten" else self.num_codebooks

    def to_dict(self) -> dict:
        return asdict(self)


def layout(codes: Tensor, config: LMConfig) -> tuple[Tensor, Tensor]:
    """Codes [B, K, T] -> (inputs [B, S, N], targets [B, S, N]) under the config's pattern:
    targets are the pattern's steps (padding -> ``IGNORE``), inputs the same shifted right
    by one step behind a start token ``C``."""
    special = config.codebook_size
    if codes.ndim != 3 or codes.shape[1] != config.num_codebooks:
        raise ValueError(f"expected codes [B, {config.num_codebooks}, T], got "
                         f"{tuple(codes.shape)}")
    if codes.shape[-1] > config.frames:
        raise ValueError(f"{codes.shape[-1]} frames exceed the LM's context of {config.frames}")
    sequence = patterns.apply_pattern(codes, config.pattern, pad=special)  # [B, S, N]
    start = sequence.new_full((*sequence.shape[:-1], 1), special)
    inputs = torch.cat([start, sequence[..., :-1]], dim=-1)
    targets = sequence.masked_fill(sequence == special, IGNORE)
    return inputs, targets


def head_of_step(config: LMConfig, steps: int, device: torch.device | None = None) -> Tensor:
    """For "flatten": the codebook predicted at each step (step % K), [N]."""
    return torch.arange(steps, device=device) % config.num_codebooks


class MusicGenLM(nn.Module):
    """Embeddings -> causal pre-norm transformer -> K heads; see the module docstring."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        vocab = config.codebook_size + 1  # the codes and the special token
        # "flatten": one table whose rows are (codebook, code) pairs, so the model knows
        # which codebook each input code came from.
        tables = config.num_codebooks if config.pattern == "flatten" else 1
        self.embeddings = nn.ModuleList(nn.Embedding(vocab * tables, config.dim)
                                        for _ in range(config.streams))
        self.position = nn.Embedding(config.steps, config.dim)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 4 * config.dim,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.layers,
                                                 enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.heads = nn.Linear(config.dim, config.num_codebooks * config.codebook_size)

    def forward(self, inputs: Tensor) -> Tensor:
        """Inputs [B, S, N] (codes and special tokens) -> logits [B, S, N, C]."""
        config, steps = self.config, inputs.shape[-1]
        if config.pattern == "flatten":
            # The input at step n is the code of step n - 1, i.e. of codebook (n - 1) % K.
            source = head_of_step(config, steps, inputs.device).roll(1)
            inputs = inputs + source * (config.codebook_size + 1)
        x = sum(table(inputs[:, k]) for k, table in enumerate(self.embeddings))
        x = x + self.position(torch.arange(steps, device=inputs.device))
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=inputs.device)
        x = self.norm(self.transformer(x, mask=mask, is_causal=True))  # [B, N, D]
        weight = self.heads.weight.view(config.num_codebooks, config.codebook_size, -1)
        bias = self.heads.bias.view(config.num_codebooks, config.codebook_size)
        if config.pattern != "flatten":  # every head at every step: [B, K, N, C]
            return torch.einsum("bnd,kcd->bknc", x, weight) + bias[None, :, None]
        # Step n = t * K + k is due to codebook k: only that head runs there.
        frames = -(-steps // config.num_codebooks)
        x = F.pad(x, (0, 0, 0, frames * config.num_codebooks - steps))
        x = x.view(x.shape[0], frames, config.num_codebooks, -1)
        logits = torch.einsum("btkd,kcd->btkc", x, weight) + bias
        return logits.flatten(1, 2)[:, None, :steps]  # [B, 1, N, C]


def code_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy (nats) of every position, [B, S, N]; 0 where the target is padding."""
    return F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=IGNORE,
                           reduction="none").view(targets.shape)


def codebook_of_target(config: LMConfig, targets: Tensor) -> Tensor:
    """The codebook each target position belongs to, broadcast to [B, S, N]."""
    if config.pattern == "flatten":
        return head_of_step(config, targets.shape[-1], targets.device).expand_as(targets)
    return torch.arange(config.num_codebooks, device=targets.device)[None, :, None].expand_as(
        targets)


def loss_per_codebook(model: MusicGenLM, codes: Tensor) -> Tensor:
    """Mean cross-entropy of each codebook's codes, [K] (nats per code)."""
    inputs, targets = layout(codes, model.config)
    losses = code_losses(model(inputs), targets)
    valid = targets != IGNORE
    which = codebook_of_target(model.config, targets)[valid]
    totals = torch.zeros(model.config.num_codebooks, device=codes.device).index_add(
        0, which, losses[valid])
    counts = torch.bincount(which, minlength=model.config.num_codebooks)
    return totals / counts.clamp(min=1)


@torch.no_grad()
def nll_per_frame(model: MusicGenLM, windows: Tensor, batch_size: int = 32) -> float:
    """Held-out negative log-likelihood of windows [W, K, T], in nats per frame (the sum
    over the K codes of a frame), averaged over all frames; model in eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for batch in windows.split(batch_size):
            inputs, targets = layout(batch, model.config)
            total += float(code_losses(model(inputs), targets).sum())
    finally:
        model.train(was_training)
    return total / (windows.shape[0] * windows.shape[-1])
