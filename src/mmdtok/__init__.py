"""mmdtok: modular audio tokenizers for music language models."""

from importlib.metadata import PackageNotFoundError, version

from mmdtok.losses import IndependenceLoss, MacroBatchIndependence
from mmdtok.models import Codec, CodecConfig
from mmdtok.quantizers import (
    FSQ,
    IdentityQuantizer,
    ProductVQ,
    Quantizer,
    QuantizerOutput,
    ResidualVQ,
)

try:
    __version__ = version("mmdtok")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["FSQ", "Codec", "CodecConfig", "IdentityQuantizer", "IndependenceLoss",
           "MacroBatchIndependence", "ProductVQ", "Quantizer", "QuantizerOutput", "ResidualVQ",
           "__version__"]
