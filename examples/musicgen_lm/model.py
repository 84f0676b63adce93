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
- ``head="depth"`` under "parallel" or "delay" (the joint model at the same length): the
  same temporal transformer, and on top of it a small transformer that runs over the K
  codes of one step, autoregressive in k, reading the temporal state and the codes
  0..k-1 of the step (as RQ-Transformer's and Moshi's depth transformers). It models
  p(codes of a step | past) exactly, with as many temporal steps as the factorized model,
  so the difference of the two likelihoods is the cost of factorizing (``gap.py``).

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
HEADS = ("factorized", "depth")


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
    head: str = "factorized"  # or "depth" (parallel and delay only)
    depth_dim: int = 128
    depth_layers: int = 1

    def __post_init__(self) -> None:
        if self.pattern not in patterns.PATTERNS:
            raise ValueError(f"pattern must be one of {patterns.PATTERNS}, got {self.pattern!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head == "depth" and self.pattern == "flatten":
            raise ValueError('the depth head needs K codes per step: pattern "parallel" or '
                             '"delay", not "flatten" (which is joint already)')
        if self.head == "depth" and (self.depth_dim % self.heads or self.depth_layers < 1):
            raise ValueError(f"depth_dim ({self.depth_dim}) must be a multiple of heads "
                             f"({self.heads}) and depth_layers ({self.depth_layers}) >= 1")
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


class DepthHead(nn.Module):
    """The within-step part of the joint model: a small causal transformer over the K
    positions of one step. Position 0 reads the projected temporal state, position k > 0
    the state plus the embedding of code k - 1 of the step (the special token ``C`` where
    the pattern pads). Its output, projected back to the LM's width, is added to the
    temporal state before the K output heads; the projection starts at zero, so an
    untrained depth head is the factorized model, and the joint model can always fall
    back to it."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        k, c, dim = config.num_codebooks, config.codebook_size, config.depth_dim
        self.project = nn.Linear(config.dim, dim)
        self.embeddings = nn.Embedding(k * (c + 1), dim)  # row k * (C + 1) + code
        self.position = nn.Embedding(k, dim)
        layer = nn.TransformerEncoderLayer(dim, config.heads, 2 * dim, config.dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.depth_layers,
                                                 enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.back = nn.Linear(dim, config.dim)
        nn.init.zeros_(self.back.weight)
        nn.init.zeros_(self.back.bias)

    def forward(self, state: Tensor, previous: Tensor) -> Tensor:
        """State [B, N, D] and the first P - 1 codes of each step, [B, P - 1, N]
        (P <= K) -> the states that predict codes 0..P-1 of each step, [B, P, N, D]."""
        config = self.config
        given = previous.shape[1]
        positions = given + 1
        if given >= config.num_codebooks:
            raise ValueError(f"at most {config.num_codebooks - 1} codes of a step can be "
                             f"given, got {given}")
        rows = previous + (config.codebook_size + 1) * torch.arange(
            given, device=previous.device)[:, None]
        codes = F.pad(self.embeddings(rows), (0, 0, 0, 0, 1, 0))  # [B, P, N, d]
        x = (self.project(state)[:, None] + codes
             + self.position.weight[:positions, None]).transpose(1, 2)  # [B, N, P, d]
        batch, steps = x.shape[:2]
        mask = nn.Transformer.generate_square_subsequent_mask(positions, device=x.device)
        x = self.transformer(x.reshape(batch * steps, positions, -1), mask=mask,
                             is_causal=True)
        x = self.back(self.norm(x)).view(batch, steps, positions, -1).transpose(1, 2)
        return state[:, None] + x


class MusicGenLM(nn.Module):
    """Embeddings -> causal pre-norm transformer -> (depth head) -> K heads; see the
    module docstring."""

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
        if config.head == "depth":
            self.depth = DepthHead(config)

    def temporal(self, inputs: Tensor) -> Tensor:
        """Inputs [B, S, N] (codes and special tokens) -> the causal state [B, N, D]: step n
        reads inputs 0..n."""
        config, steps = self.config, inputs.shape[-1]
        if config.pattern == "flatten":
            # The input at step n is the code of step n - 1, i.e. of codebook (n - 1) % K.
            source = head_of_step(config, steps, inputs.device).roll(1)
            inputs = inputs + source * (config.codebook_size + 1)
        x = sum(table(inputs[:, k]) for k, table in enumerate(self.embeddings))
        x = x + self.position(torch.arange(steps, device=inputs.device))
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=inputs.device)
        return self.norm(self.transformer(x, mask=mask, is_causal=True))  # [B, N, D]

    def depth_logits(self, state: Tensor, previous: Tensor) -> Tensor:
        """Depth head: state [B, N, D] and codes 0..P-2 of each step [B, P - 1, N] ->
        logits of codes 0..P-1 of each step, [B, P, N, C]."""
        config = self.config
        x = self.depth(state, previous)  # [B, P, N, D]
        batch, positions, steps, _ = x.shape
        weight = self.heads.weight.view(config.num_codebooks, config.codebook_size, -1)
        bias = self.heads.bias.view(config.num_codebooks, config.codebook_size)
        # One matrix product per position, the logits made in place ([P, B * N, C]).
        x = x.transpose(0, 1).reshape(positions, batch * steps, -1)
        logits = torch.baddbmm(bias[:positions, None], x, weight[:positions].transpose(1, 2))
        return logits.view(positions, batch, steps, -1).transpose(0, 1)

    def forward(self, inputs: Tensor, targets: Tensor | None = None) -> Tensor:
        """Inputs [B, S, N] -> logits [B, S, N, C]. The depth head also reads the targets
        [B, S, N] of :func:`layout` (teacher forcing: code k of a step is predicted from
        codes 0..k-1 of the same step); the factorized heads ignore them."""
        config, steps = self.config, inputs.shape[-1]
        x = self.temporal(inputs)
        if config.head == "depth":
            if targets is None:
                raise ValueError("the depth head needs the targets (teacher forcing)")
            step_codes = targets.masked_fill(targets == IGNORE, config.codebook_size)
            return self.depth_logits(x, step_codes[:, :-1])
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
    losses = code_losses(model(inputs, targets), targets)
    valid = targets != IGNORE
    which = codebook_of_target(model.config, targets)[valid]
    totals = torch.zeros(model.config.num_codebooks, device=codes.device).index_add(
        0, which, losses[valid])
    counts = torch.bincount(which, minlength=model.config.num_codebooks)
    return totals / counts.clamp(min=1)


@torch.no_grad()
def nll_per_window(model: MusicGenLM, windows: Tensor, batch_size: int = 32) -> Tensor:
    """Held-out negative log-likelihood of each window of [W, K, T], in nats per frame
    (the sum over the K codes of a frame, averaged over its T frames): [W], float64;
    model in eval mode."""
    was_training = model.training
    model.eval()
    totals = []
    try:
        for batch in windows.split(batch_size):
            inputs, targets = layout(batch, model.config)
            losses = code_losses(model(inputs, targets), targets)
            totals.append(losses.flatten(1).sum(dim=1).double())
    finally:
        model.train(was_training)
    return torch.cat(totals) / windows.shape[-1]


def nll_per_frame(model: MusicGenLM, windows: Tensor, batch_size: int = 32) -> float:
    """Held-out negative log-likelihood of windows [W, K, T], in nats per frame (the sum
    over the K codes of a frame), averaged over all frames; model in eval mode."""
    return float(nll_per_window(model, windows, batch_size).mean())
