"""Pluggable quantizers: residual VQ, product VQ with hierarchical dropout, FSQ, and a
continuous (VAE) bottleneck.

All follow :class:`Quantizer`: ``forward(z [B, D, T]) -> QuantizerOutput``,
``encode(z, n_q=None) -> codes [B, K, T]`` and ``decode(codes) -> z``.
"""

from mmdtok.quantizers.base import Quantizer, QuantizerOutput
from mmdtok.quantizers.codebook import CodebookOptions, EuclideanCodebook
from mmdtok.quantizers.factorized import FactorizedRVQ
from mmdtok.quantizers.fsq import FSQ
from mmdtok.quantizers.identity import IdentityQuantizer
from mmdtok.quantizers.latent_norm import LatentNorm
from mmdtok.quantizers.product import ProductVQ
from mmdtok.quantizers.residual import ResidualVQ
from mmdtok.quantizers.vae import VAEBottleneck

__all__ = ["FSQ", "CodebookOptions", "EuclideanCodebook", "FactorizedRVQ", "IdentityQuantizer",
           "LatentNorm", "ProductVQ", "Quantizer", "QuantizerOutput", "ResidualVQ", "VAEBottleneck"]
