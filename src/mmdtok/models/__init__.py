"""The EnCodec-style codec: SEANet encoder and decoder around a quantizer, its presets,
and exact chunked (streaming) encoding and decoding of long or many inputs."""

from mmdtok.models.codec import Codec, CodecConfig, CodecOutput, build_quantizer
from mmdtok.models.presets import PRESETS, build_codec, preset
from mmdtok.models.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from mmdtok.models.streaming import StreamSettings, decode_many, encode_many

__all__ = ["PRESETS", "Codec", "CodecConfig", "CodecOutput", "SEANetConfig", "SEANetDecoder",
           "SEANetEncoder", "StreamSettings", "build_codec", "build_quantizer",
           "decode_many", "encode_many", "preset"]
