"""A pass-through quantizer, for testing codecs and losses without quantization."""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.quantizers.base import Quantizer, QuantizerOutput


class IdentityQuantizer(Quantizer):
    """Returns the latent unchanged; its K streams are K equal channel groups of it.

    It keeps no information in codes: ``codes`` is all zeros ([B, K, T], a codebook of
    one code) and ``decode`` raises. Use it to test a codec's reconstruction path or the
    independence loss on continuous streams.
    """

    def __init__(self, dim: int, num_codebooks: int = 1) -> None:
        super().__init__()
        if num_codebooks < 1 or dim % num_codebooks:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_codebooks "
                             f"({num_codebooks})")
        self.dim, self.num_codebooks, self.codebook_size = dim, num_codebooks, 1

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        batch, dim, frames = z.shape
        return QuantizerOutput(
            quantized=z,
            codes=self.encode_latent(z, self.num_codebooks),
            streams=z.view(batch, self.num_codebooks, dim // self.num_codebooks, frames),
            num_kept=torch.full((batch,), self.num_codebooks, dtype=torch.int64,
                                device=z.device),
        )

    def encode_latent(self, z: Tensor, n_q: int) -> Tensor:
        return torch.zeros(z.shape[0], n_q, z.shape[-1], dtype=torch.int64, device=z.device)

    def decode(self, codes: Tensor) -> Tensor:
        return self.decode_codes(codes)

    def decode_codes(self, codes: Tensor) -> Tensor:
        raise ValueError("IdentityQuantizer keeps no information in its codes and cannot "
                         "decode them; use forward(z).quantized")
