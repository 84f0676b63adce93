"""The v-objective on a continuous cosine schedule, DPM-Solver++ (2M) sampling and
classifier-free guidance.

Schedule: at time t in [0, 1], alpha = cos(pi t / 2), sigma = sin(pi t / 2) (alpha^2 +
sigma^2 = 1); a noisy latent is x_t = alpha x_0 + sigma noise, and the network predicts
v = alpha noise - sigma x_0, from which x_0 = alpha x_t - sigma v and noise = sigma x_t +
alpha v.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

VelocityModel = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, D, T], t [B]) -> v


def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) at times ``t`` (any shape)."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def _expand(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *[1] * (like.ndim - 1))


def noisy(x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, v target) of clean latents ``x0`` [B, ...] at times ``t`` [B]."""
    alpha, sigma = (_expand(v, x0) for v in alpha_sigma(t))
    return alpha * x0 + sigma * noise, alpha * noise - sigma * x0


def x0_from_v(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = (_expand(s, x_t) for s in alpha_sigma(t))
    return alpha * x_t - sigma * v


def noise_from_v(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = (_expand(s, x_t) for s in alpha_sigma(t))
    return sigma * x_t + alpha * v


def guided(conditional: VelocityModel, unconditional: VelocityModel, scale: float
           ) -> VelocityModel:
    """Classifier-free guidance: v_u + scale (v_c - v_u). Scale 1 is the conditional
    model itself (its output, exactly, without an unconditional pass)."""
    if scale == 1:
        return conditional

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v_c, v_u = conditional(x, t), unconditional(x, t)
        return v_u + scale * (v_c - v_u)
    return velocity


def _log_snr(t: float) -> float:
    """lambda = log(alpha / sigma), +-inf at the ends."""
    alpha, sigma = math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
    if alpha <= 1e-12:
        return -math.inf
    if sigma <= 0:
        return math.inf
    return math.log(alpha) - math.log(sigma)


@torch.no_grad()
def sample_dpm_solver(model: VelocityModel, noise: Tensor, steps: int = 50,
                      progress: Callable[[int], None] = lambda step: None) -> Tensor:
    """DPM-Solver++ (2M): from pure noise at t = 1 to data at t = 0 in ``steps``
    evaluations of ``model`` on a uniform time grid. Each step moves along the
    exact solution of the probability-flow ODE for a data prediction held constant
    (first order) or extrapolated linearly in log-SNR from the last two (second order).
    The first step (from lambda = -inf) and the last (to lambda = +inf) are first order."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x, previous, previous_h = noise, None, None
    for i in range(steps):
        s, t = times[i], times[i + 1]
        batch_t = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)
        x0 = x0_from_v(x, model(x, batch_t), batch_t)
        alpha_s, sigma_s = math.cos(s * math.pi / 2), math.sin(s * math.pi / 2)
        alpha_t, sigma_t = math.cos(t * math.pi / 2), max(math.sin(t * math.pi / 2), 0.0)
        h = _log_snr(t) - _log_snr(s)
        # exp(-h) = (alpha_s sigma_t) / (sigma_s alpha_t), taken directly (finite at the ends)
        decay = 0.0 if alpha_t <= 1e-12 else (alpha_s * sigma_t) / (sigma_s * alpha_t)
        if previous is None or not math.isfinite(h) or not math.isfinite(previous_h):
            data = x0
        else:
            r = previous_h / h
            data = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous
        x = (sigma_t / sigma_s) * x - alpha_t * (decay - 1) * data
        previous, previous_h = x0, h
        progress(i + 1)
    return x
