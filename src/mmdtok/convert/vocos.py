"""Vocos weights (its ``VocosBackbone`` and ``ISTFTHead``, the ``vocos`` package's names)
in the layout of :class:`mmdtok.models.ISTFTDecoder`: the same function, so that a
Vocos decoder trained elsewhere runs behind mmdtok's contract. The adaptive layer norm
of Vocos' bandwidth-conditioned models (``norm.scale``, ``norm.shift``) has no
counterpart here and is refused."""

from __future__ import annotations

import re

from torch import Tensor


def convert_vocos_state(backbone: dict[str, Tensor], head: dict[str, Tensor]
                        ) -> dict[str, Tensor]:
    """The state dict of an ``ISTFTDecoder`` from a Vocos backbone's and ISTFT head's
    state dicts; ValueError naming a tensor that has no place."""
    blocks = {int(m[1]) for k in backbone if (m := re.match(r"convnext\.(\d+)\.", k))}
    count = len(blocks)
    if blocks != set(range(count)):
        raise ValueError(f"the backbone's ConvNeXt blocks are not numbered 0..n-1: "
                         f"{sorted(blocks)}")
    out: dict[str, Tensor] = {}
    for name, tensor in backbone.items():
        if name.startswith("embed."):
            out[f"layers.0.conv.{name.removeprefix('embed.')}"] = tensor
        elif re.fullmatch(r"norm\.(weight|bias)", name):
            out[f"layers.1.{name}"] = tensor
        elif m := re.fullmatch(r"convnext\.(\d+)\.(.+)", name):
            out[f"layers.{2 + int(m[1])}.{m[2]}"] = tensor
        elif name.startswith("final_layer_norm."):
            out[f"layers.{2 + count}.norm.{name.removeprefix('final_layer_norm.')}"] = tensor
        else:
            raise ValueError(f"the Vocos backbone tensor {name!r} has no place in mmdtok's "
                             "ISTFT decoder (adaptive layer norm is not supported)")
    for name, tensor in head.items():
        if name.startswith("out."):
            out[f"layers.{3 + count}.{name}"] = tensor
        elif name != "istft.window":  # the Hann window: a fixed buffer here
            raise ValueError(f"the Vocos head tensor {name!r} has no place in mmdtok's "
                             "ISTFT head (only the ISTFT head is supported)")
    return out


__all__ = ["convert_vocos_state"]
