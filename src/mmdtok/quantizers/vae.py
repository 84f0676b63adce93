"""A continuous bottleneck: a VAE behind the quantizer interface (as in Stable Audio 2).

The encoder emits 2D channels per frame, a mean and a pre-activation scale for each of
the D latent channels. In training the latent is a sample ``mean + std * noise`` (the
reparameterization trick) and ``losses["kl"]`` is the KL divergence from a standard
normal; at inference the latent is the mean. There are no codes: ``encode`` returns the
latent [B, D, T] (float) and ``decode`` takes it back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdtok.limits import MAX_CODEBOOKS
from mmdtok.quantizers.base import Quantizer, QuantizerOutput


class VAEBottleneck(Quantizer):
    """A variational bottleneck with D latent channels, seen as K streams of D / K.

    Input [B, 2D, T] (mean, then scale before the softplus); output ``quantized``: the
    sampled latent [B, D, T] in training, the mean in eval mode. ``streams``: the mean's
    K channel groups [B, K, D / K, T], with a gradient to the encoder, so that
    :class:`~mmdtok.IndependenceLoss` measures (and reduces) the dependence between
    groups of latent channels. ``losses["kl"]``: KL(q(z | x) || N(0, 1)) summed over the
    channels, averaged over frames (the trainer weights it with ``kl_weight``, 1e-4 by
    default as in the paper). ``codes`` is empty ([B, 0, T]): a continuous latent has
    none; ``codebook_size`` is 0.

    Args:
        dim: latent channels D (the encoder emits 2D).
        groups: number of streams K (channel groups, D divisible by K).
        min_std: floor added to the softplus of the scale.
    """

    continuous = True

    def __init__(self, dim: int = 64, groups: int = 1, *, min_std: float = 1e-4) -> None:
        super().__init__()
        if not 1 <= groups <= MAX_CODEBOOKS or dim < 1 or dim % groups:
            raise ValueError(f"dim ({dim}) must be a positive multiple of groups ({groups}), "
                             f"groups in 1..{MAX_CODEBOOKS}")
        if not min_std > 0:
            raise ValueError(f"min_std must be positive, got {min_std}")
        self.dim, self.num_codebooks, self.codebook_size = dim, groups, 0
        self.min_std = float(min_std)

    @property
    def input_dim(self) -> int:
        return 2 * self.dim

    def moments(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation [B, D, T] of q(latent | z)."""
        mean, scale = z.chunk(2, dim=1)
        return mean, F.softplus(scale) + self.min_std

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        mean, std = self.moments(z)
        latent = mean + std * torch.randn_like(std) if self.training else mean
        kl = kl_divergence(mean, std)
        batch, dim, frames = mean.shape
        return QuantizerOutput(
            quantized=latent,
            codes=torch.zeros(batch, 0, frames, dtype=torch.int64, device=z.device),
            streams=mean.view(batch, self.num_codebooks, dim // self.num_codebooks, frames),
            losses={"kl": kl},
            metrics={"kl": kl.detach(), "latent_std": std.detach().mean()},
            num_kept=torch.full((batch,), self.num_codebooks, dtype=torch.int64,
                                device=z.device),
        )

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        return self.moments(z)[0]

    def checked_codes(self, codes: Tensor) -> Tensor:
        """The latent [B, D, T] as float32 after checking it (what ``decode`` takes in
        place of codes); TypeError or ValueError naming what is wrong."""
        if not isinstance(codes, Tensor):
            raise TypeError(f"expected a torch.Tensor latent [B, D, T], got "
                            f"{type(codes).__name__}")
        if codes.ndim != 3 or codes.shape[1] != self.dim:
            raise ValueError(f"expected a latent [B, D={self.dim}, T], got shape "
                             f"{tuple(codes.shape)}")
        if not codes.is_floating_point():
            raise ValueError(f"expected a floating-point latent, got dtype {codes.dtype}"
                             " (integer codes belong to a quantized codec)")
        if codes.numel() and not bool(torch.isfinite(codes).all()):
            raise ValueError("the latent contains NaN or infinite values")
        return codes.float()

    def decode_codes(self, codes: Tensor) -> Tensor:
        return codes


def kl_divergence(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2) || N(0, 1)) summed over the channels (axis 1), averaged over
    the batch and frames."""
    var = std.pow(2)
    return 0.5 * (mean.pow(2) + var - var.log() - 1).sum(dim=1).mean()
