"""Top-k sampling with temperature, and generation of codes [B, K, T] under any pattern.

Generation reruns the transformer on the whole prefix at every step (no key/value
cache): simple and exact, quadratic in the number of steps, fine for the few seconds a
small LM's context holds. With the depth head, the K codes of a step are drawn one after
the other, code k from the temporal state and the codes 0..k-1 already drawn (padding
positions of the delay pattern hold the special token, as in training).
"""

from __future__ import annotations

import torch
from torch import Tensor

from examples.musicgen_lm.model import MusicGenLM
from mmdtok import patterns


def sample_top_k(logits: Tensor, top_k: int, temperature: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of logits [..., C] from the ``top_k`` most likely codes, their
    probabilities ``softmax(logits / temperature)`` renormalized; ``top_k = 0`` keeps all.
    ``temperature = 0`` is greedy (argmax)."""
    if temperature < 0 or top_k < 0:
        raise ValueError(f"temperature and top_k must be >= 0, got {temperature} and {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    if 0 < top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return draws.view(probs.shape[:-1])


def _writable(config, step: int, frames: int) -> Tensor:
    """Which of the S codes of pattern step ``step`` belong to a frame < ``frames`` (the
    others stay padding): [S] booleans."""
    if config.pattern == "delay":
        frame = step - torch.arange(config.num_codebooks)
        return (frame >= 0) & (frame < frames)
    if config.pattern == "flatten":
        return torch.tensor([step // config.num_codebooks < frames])
    return torch.ones(config.num_codebooks, dtype=torch.bool)


def _draw_step(model: MusicGenLM, prefix: Tensor, keep: Tensor, top_k: int,
               temperature: float, generator: torch.Generator | None) -> Tensor:
    """The K codes [B, K] of the step after ``prefix`` [B, K, s], drawn in order k."""
    special = model.config.codebook_size
    state = model.temporal(prefix)[:, -1:]  # [B, 1, D]
    drawn = prefix.new_full((prefix.shape[0], model.config.num_codebooks), special)
    for k in range(model.config.num_codebooks):
        logits = model.depth_logits(state, drawn[:, :k, None])[:, k, 0]  # [B, C]
        draw = sample_top_k(logits, top_k, temperature, generator)
        drawn[:, k] = draw if keep[k] else special
    return drawn


@torch.no_grad()
def generate(model: MusicGenLM, frames: int, batch_size: int = 1, *, top_k: int = 250,
             temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Sample ``batch_size`` clips of ``frames`` frames (at most the context): codes
    [B, K, T], unconditionally."""
    config = model.config
    if not 1 <= frames <= config.frames:
        raise ValueError(f"frames must be in [1, {config.frames}] (the LM's context), got "
                         f"{frames}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    special = config.codebook_size
    steps = patterns.num_steps(config.pattern, config.num_codebooks, frames)
    # The start token, then the steps as they are drawn: step s reads inputs[..., : s + 1].
    inputs = torch.full((batch_size, config.streams, steps + 1), special, device=device)
    try:
        for step in range(steps):
            keep = _writable(config, step, frames).to(device)
            if config.head == "depth":
                inputs[:, :, step + 1] = _draw_step(model, inputs[..., : step + 1], keep,
                                                    top_k, temperature, generator)
                continue
            logits = model(inputs[..., : step + 1])[:, :, -1]  # [B, S, C]
            draw = sample_top_k(logits, top_k, temperature, generator)
            inputs[:, :, step + 1] = torch.where(keep, draw, special)
    finally:
        model.train(was_training)
    return patterns.revert_pattern(inputs[..., 1:], config.pattern, config.num_codebooks)
