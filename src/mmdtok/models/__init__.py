"""The EnCodec-style codec: SEANet encoder and decoder around a quantizer, its presets,
and exact chunked encoding and decoding of long or many inputs. Nothing here knows files
or the Hub: that is :mod:`mmdtok.persistence`."""

from mmdtok.models.codec import CodecModel, CodecOutput
from mmdtok.models.config import CodecConfig, build_quantizer
from mmdtok.models.dac import DACConfig, DACDecoder, DACEncoder
from mmdtok.models.istft import ISTFTConfig, ISTFTDecoder
from mmdtok.models.presets import PRESETS, preset
from mmdtok.models.runtime.chunked import ChunkSettings, decode_many, encode_many
from mmdtok.models.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder

__all__ = ["PRESETS", "ChunkSettings", "CodecConfig", "CodecModel", "CodecOutput",
           "DACConfig", "DACDecoder", "DACEncoder", "ISTFTConfig", "ISTFTDecoder",
           "SEANetConfig", "SEANetDecoder", "SEANetEncoder", "build_quantizer",
           "decode_many", "encode_many", "preset"]
