"""mmdtok: modular audio tokenizers for music language models."""

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.models import CodecConfig, CodecModel
from mmdtok.persistence import Codec
from mmdtok.quantizers import (
    FSQ,
    CodebookOptions,
    IdentityQuantizer,
    ProductVQ,
    Quantizer,
    QuantizerOutput,
    ResidualVQ,
    VAEBottleneck,
)
from mmdtok.version import __version__

__all__ = ["FSQ", "Codec", "CodecConfig", "CodecModel", "CodebookOptions", "IdentityQuantizer",
           "IndependenceLoss", "MacroBatchIndependence", "ProductVQ", "Quantizer",
           "QuantizerOutput", "ResidualVQ", "VAEBottleneck", "__version__"]
