"""EnCodec's gradient balancer: each loss gets a share of the gradient on the codec's
output proportional to its weight, whatever the scale of the loss.

For losses l_k on the decoded audio y, with gradients g_k = dl_k/dy, the balancer returns

    g = sum_k  total_norm * (w_k / sum_j w_j) * g_k / EMA(||g_k||)

where ||g_k|| is the norm per batch item, averaged over the batch (and over ranks), and
EMA a bias-corrected moving average. The trainer calls ``y.backward(g)`` (plus any loss
outside the balancer, e.g. the quantizer's commitment). The balancer only computes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.distributed import all_reduce_sum, world_size


class GradientBalancer:
    """Combine the gradients of named losses on one output tensor.

    Args:
        weights: loss name -> weight (EnCodec: l1 0.1, mel 2, adversarial 4, features 4).
        total_norm: the norm the combined gradient aims at (EnCodec: 1).
        ema_decay: of the gradient-norm averages (EnCodec: 0.999); 0 uses this step's norms.
        per_batch_item: norms per batch item, averaged (True), or over the whole tensor.
    """

    def __init__(self, weights: dict[str, float], *, total_norm: float = 1.0,
                 ema_decay: float = 0.999, per_batch_item: bool = True,
                 eps: float = 1e-12) -> None:
        if not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.weights, self.total_norm, self.ema_decay = dict(weights), total_norm, ema_decay
        self.per_batch_item, self.eps = per_batch_item, eps
        self.averages: dict[str, float] = {}
        self.steps = 0

    def _norm(self, grad: Tensor) -> Tensor:
        if self.per_batch_item:
            norm = grad.reshape(grad.shape[0], -1).norm(dim=1).mean()
        else:
            norm = grad.norm()
        return all_reduce_sum(norm.detach().double()) / world_size()

    def combine(self, losses: dict[str, Tensor], output: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The combined gradient for ``output`` and the gradient norms (for logging).
        Every loss must be named in ``weights``; the graph is kept for the caller's
        backward."""
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise ValueError(f"losses {sorted(unknown)} have no weight; weights: "
                             f"{sorted(self.weights)}")
        self.steps += 1
        total_weight = sum(self.weights[name] for name in losses)
        combined, norms = torch.zeros_like(output), {}
        for name, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, output, retain_graph=True)
            norm = float(self._norm(grad))
            average = self.ema_decay * self.averages.get(name, 0.0) + (1 - self.ema_decay) * norm
            self.averages[name] = average
            corrected = average / (1 - self.ema_decay ** self.steps)
            share = self.total_norm * self.weights[name] / total_weight
            combined.add_(grad, alpha=share / (self.eps + corrected))
            norms[name] = norm
        return combined, norms

    def state_dict(self) -> dict[str, object]:
        return {"averages": dict(self.averages), "steps": self.steps}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.averages = dict(state["averages"])  # type: ignore[arg-type]
        self.steps = int(state["steps"])  # type: ignore[arg-type]
