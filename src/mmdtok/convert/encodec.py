"""Import of published EnCodec weights in the layout of ``transformers``' EncodecModel
(``config.json`` with ``"model_type": "encodec"`` + ``model.safetensors``, as in
facebook/encodec_24khz and facebook/encodec_32khz).

The SEANet layer lists keep EnCodec's order, so the state dict converts by renaming:
old-style weight norm (``weight_g``/``weight_v``) to torch parametrizations, and the
codebooks of ``quantizer.layers.k.codebook`` to ``quantizer.codebooks.k``.

Not supported: models that rescale each chunk by its loudness and encode fixed chunks
(``normalize`` / ``chunk_length_s``, the 48 kHz stereo model) or use time-wise group
norm; their codes need per-chunk scales that a token file does not carry.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor

from mmdtok.models.config import CodecConfig
from mmdtok.models.seanet import SEANetConfig

MODEL_TYPE = "encodec"


def is_encodec_config(data: dict[str, Any]) -> bool:
    return data.get("model_type") == MODEL_TYPE


def _check_supported(data: dict[str, Any]) -> None:
    reasons = []
    if data.get("normalize"):
        reasons.append("normalize=true (per-chunk loudness scales)")
    if data.get("chunk_length_s") is not None:
        reasons.append(f"chunk_length_s={data['chunk_length_s']} (fixed overlapping chunks)")
    if data.get("norm_type", "weight_norm") != "weight_norm":
        reasons.append(f"norm_type={data['norm_type']!r}")
    if reasons:
        raise ValueError("this EnCodec model is not supported by mmdtok: "
                         + ", ".join(reasons) + ". The 48 kHz stereo EnCodec needs "
                         "per-chunk scales; use facebook/encodec_24khz or encodec_32khz.")
    hidden, codebook_dim = data.get("hidden_size", 128), data.get("codebook_dim")
    if codebook_dim is not None and codebook_dim != hidden:
        raise ValueError(f"codebook_dim {codebook_dim} != hidden_size {hidden} is not "
                         "supported (the RVQ quantizes the latent directly)")


def codec_config_from_encodec(data: dict[str, Any], name: str = "encodec") -> CodecConfig:
    """The mmdtok config of an EnCodec ``config.json`` (transformers' field names and
    defaults)."""
    _check_supported(data)
    ratios = tuple(data.get("upsampling_ratios", (8, 5, 4, 2)))
    sample_rate = int(data.get("sampling_rate", 24_000))
    codebook_size = int(data.get("codebook_size", 1024))
    bandwidths = data.get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0))
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    num_codebooks = int(1000 * max(bandwidths) // (frame_rate * math.ceil(
        math.log2(codebook_size))))
    seanet = SEANetConfig(
        channels=int(data.get("audio_channels", 1)), dimension=int(data.get("hidden_size", 128)),
        n_filters=int(data.get("num_filters", 32)), ratios=ratios,
        n_residual_layers=int(data.get("num_residual_layers", 1)),
        kernel_size=int(data.get("kernel_size", 7)),
        last_kernel_size=int(data.get("last_kernel_size", 7)),
        residual_kernel_size=int(data.get("residual_kernel_size", 3)),
        dilation_base=int(data.get("dilation_growth_rate", 2)),
        compress=int(data.get("compress", 2)), lstm_layers=int(data.get("num_lstm_layers", 2)),
        causal=bool(data.get("use_causal_conv", True)), pad_mode=data.get("pad_mode", "reflect"),
        conv_shortcut=bool(data.get("use_conv_shortcut", True)),
        trim_right_ratio=float(data.get("trim_right_ratio", 1.0)))
    quantizer = {"kind": "rvq", "num_codebooks": num_codebooks, "codebook_size": codebook_size,
                 "codebook": {"decay": 0.99, "kmeans_iters": 50, "dead_code_threshold": 2.0,
                              "dead_code_unit": "count"}}
    return CodecConfig(name=name, sample_rate=sample_rate, seanet=seanet, quantizer=quantizer)


# old-style weight norm (torch.nn.utils.weight_norm) to torch parametrizations
WEIGHT_NORM_RENAMES = [
    (re.compile(r"\.weight_g$"), ".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), ".parametrizations.weight.original1"),
]
_RENAMES = [
    *WEIGHT_NORM_RENAMES,
    (re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.embed_avg$"),
     r"quantizer.codebooks.\1.embed_sum"),
    (re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.(embed|cluster_size)$"),
     r"quantizer.codebooks.\1.\2"),
    (re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.inited$"),
     r"quantizer.codebooks.\1.initialized"),
]


def convert_encodec_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An EnCodec state dict renamed for :class:`~mmdtok.models.CodecModel`; each codebook
    gets its ``num_updates`` counter (0)."""
    converted: dict[str, Tensor] = {}
    for name, tensor in state.items():
        for pattern, replacement in _RENAMES:
            name = pattern.sub(replacement, name)
        if name.endswith(".initialized"):
            tensor = tensor.reshape(()).bool()
            converted[name.replace(".initialized", ".num_updates")] = torch.tensor(0)
        converted[name] = tensor
    return converted
