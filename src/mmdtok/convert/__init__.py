"""Import of published codec weights from other layouts (EnCodec, DAC)."""

from mmdtok.convert.dac import codec_config_from_dac, convert_dac_state, is_dac_config
from mmdtok.convert.encodec import (
    codec_config_from_encodec,
    convert_encodec_state,
    is_encodec_config,
)

__all__ = ["codec_config_from_dac", "codec_config_from_encodec", "convert_dac_state",
           "convert_encodec_state", "is_dac_config", "is_encodec_config"]
