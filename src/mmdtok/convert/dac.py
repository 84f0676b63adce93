"""Import of published DAC weights in the layout of ``transformers``' DacModel
(``config.json`` with ``"model_type": "dac"`` + ``model.safetensors``, as in
descript/dac_16khz, descript/dac_24khz and descript/dac_44khz).

mmdtok's DAC network (:mod:`mmdtok.models.dac`) and factorized quantizer
(:class:`~mmdtok.quantizers.FactorizedRVQ`) use DacModel's module names, so the state
dict converts by renaming old-style weight norm (``weight_g``/``weight_v``) to torch
parametrizations; a state saved with parametrizations loads as it is.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mmdtok.convert.encodec import WEIGHT_NORM_RENAMES
from mmdtok.models.config import CodecConfig
from mmdtok.models.dac import DACConfig

MODEL_TYPE = "dac"


def is_dac_config(data: dict[str, Any]) -> bool:
    return data.get("model_type") == MODEL_TYPE


def codec_config_from_dac(data: dict[str, Any], name: str = "dac") -> CodecConfig:
    """The mmdtok config of a DAC ``config.json`` (transformers' field names and
    defaults: the 44.1 kHz model's)."""
    network = DACConfig(encoder_dim=int(data.get("encoder_hidden_size", 64)),
                        decoder_dim=int(data.get("decoder_hidden_size", 1536)),
                        ratios=tuple(data.get("downsampling_ratios", (2, 4, 8, 8))))
    if data.get("hidden_size", network.dimension) != network.dimension:
        raise ValueError(f"hidden_size {data['hidden_size']} is not encoder_hidden_size * "
                         f"2**len(downsampling_ratios) = {network.dimension}")
    num_codebooks = int(data.get("n_codebooks", 9))
    quantizer = {"kind": "factorized", "num_codebooks": num_codebooks,
                 "codebook_size": int(data.get("codebook_size", 1024)),
                 "codebook_dim": int(data.get("codebook_dim", 8))}
    dropout = float(data.get("quantizer_dropout", 0.0))
    if not 0 <= dropout <= 1:
        raise ValueError(f"quantizer_dropout must be in [0, 1], got {dropout}")
    if dropout:  # DAC: that fraction of a batch keeps 1..K codebooks uniformly, the rest K
        quantizer["codebook_dropout"] = [dropout / num_codebooks] * (num_codebooks - 1) + [
            1 - dropout + dropout / num_codebooks]
    return CodecConfig(name=name, sample_rate=int(data.get("sampling_rate", 44_100)),
                       dac=network, quantizer=quantizer)


def convert_dac_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A DacModel state dict renamed for :class:`~mmdtok.models.CodecModel`."""
    converted = {}
    for name, tensor in state.items():
        for pattern, replacement in WEIGHT_NORM_RENAMES:
            name = pattern.sub(replacement, name)
        converted[name] = tensor
    return converted
