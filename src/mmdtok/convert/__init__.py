"""Import of published codec weights from other layouts."""

from mmdtok.convert.encodec import (
    codec_config_from_encodec,
    convert_encodec_state,
    is_encodec_config,
)

__all__ = ["codec_config_from_encodec", "convert_encodec_state", "is_encodec_config"]
