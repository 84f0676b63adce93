"""Import of published codec weights from other layouts (EnCodec, DAC, Vocos)."""

from mmdtok.convert.dac import codec_config_from_dac, convert_dac_state, is_dac_config
from mmdtok.convert.encodec import (
    codec_config_from_encodec,
    convert_encodec_state,
    is_encodec_config,
)
from mmdtok.convert.vocos import convert_vocos_state

__all__ = ["codec_config_from_dac", "codec_config_from_encodec", "convert_dac_state",
           "convert_encodec_state", "convert_vocos_state", "is_dac_config", "is_encodec_config"]
