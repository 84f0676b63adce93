"""Helpers for checking codecs, shared by mmdtok's tests and benchmarks and usable in
yours: a structured test signal, a codec whose codebooks are fitted to its own latents,
an EnCodec model folder with random weights in the published layout, and a comparison of
codes that tolerates float32 ties.

Not for judging quality: the signals are synthetic and the weights random.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

import torch
from torch import Tensor

from mmdtok.models.config import CodecConfig
from mmdtok.persistence import Codec

# The configs of the published EnCodec models, as transformers' EncodecConfig overrides
# (its defaults are the 24 kHz model).
ENCODEC_CONFIGS: dict[str, dict[str, Any]] = {
    "encodec_24khz": {},
    "encodec_32khz": {"sampling_rate": 32_000, "num_filters": 64,
                      "upsampling_ratios": [8, 5, 4, 4], "use_causal_conv": False,
                      "use_conv_shortcut": False, "codebook_size": 2048,
                      "target_bandwidths": [2.2]},
}


def notes(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> Tensor:
    """A deterministic sequence of harmonic notes with attack/decay envelopes plus a little
    noise, [C, L]: a structured signal for exactness tests (not for judging quality)."""
    gen = torch.Generator().manual_seed(seed)
    length = int(seconds * sample_rate)
    t = torch.arange(length) / sample_rate
    out = torch.zeros(channels, length)
    note_len = 0.25
    for start in torch.arange(0, seconds, note_len).tolist():
        pitch = 110 * 2 ** (int(torch.randint(0, 36, (1,), generator=gen)) / 12)
        mask = (t >= start) & (t < start + 2 * note_len)
        local = t[mask] - start
        env = torch.exp(-local * 6) * (1 - torch.exp(-local * 200))
        tone = sum(torch.sin(2 * math.pi * pitch * h * local) / h for h in (1, 2, 3, 4))
        out[:, mask] += 0.2 * env * tone
    return out + 0.003 * torch.randn(channels, length, generator=gen)


def tiny_vae(channels: int = 2, dimension: int = 16, ratios: tuple[int, ...] = (4, 4, 2),
             groups: int = 4, seed: int = 0) -> Codec:
    """A small 16 kHz codec with a VAE bottleneck and Snake activations, fresh weights
    from ``seed``: continuous latents for tests, in a fraction of a second."""
    from mmdtok.models import CodecConfig, SEANetConfig

    config = CodecConfig(name="tiny-vae", sample_rate=16_000, seanet=SEANetConfig(
        channels=channels, dimension=dimension, n_filters=4, ratios=ratios, lstm_layers=1,
        activation="snake"), quantizer={"kind": "vae", "groups": groups})
    torch.manual_seed(seed)
    return Codec.from_config(config)


def trained_codebooks(name: str | CodecConfig, seed: int = 0) -> Codec:
    """A preset codec (or one of ``name`` a config; random SEANet weights) whose
    codebooks were initialized by k-means on its own latents, so that codes are spread as
    in a real codec; eval mode, weight norm folded.

    Computed once per process for the same arguments (seconds for a small codec, a
    minute for a published layout); each call returns a copy of its own, and leaves
    torch's random state as the computation would."""
    config = name if isinstance(name, CodecConfig) else Codec.from_preset(name).config
    key = (json.dumps(config.to_dict(), sort_keys=True), seed)
    if key not in _TRAINED:
        torch.manual_seed(seed)
        codec = Codec.from_config(config)
        sr = codec.sample_rate
        batch = torch.stack([notes(4.0, sr, seed=s, channels=codec.channels)
                             for s in range(16)])
        codec.train()
        with torch.no_grad():  # the decoder holds no statistics: encoder and quantizer only
            codec.quantizer(codec.encoder(batch))
        _TRAINED[key] = (codec.for_inference(), torch.get_rng_state())
    codec, state = _TRAINED[key]
    torch.set_rng_state(state)
    return copy.deepcopy(codec)


_TRAINED: dict[tuple[str, int], tuple[Codec, Tensor]] = {}


def encodec_folder(overrides: dict[str, Any], folder: str | os.PathLike[str], seed: int = 0
                   ) -> torch.nn.Module:
    """A transformers ``EncodecModel`` with random weights and codebooks drawn from its own
    latents (its initial codebooks are all zeros), saved to ``folder`` in the published
    layout (needs transformers); returns the model, in eval mode."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.EncodecModel(transformers.EncodecConfig(**overrides)).eval()
    sr = model.config.sampling_rate
    with torch.no_grad():
        batch = torch.stack([notes(2.0, sr, seed=s) for s in range(4)])
        residual = model.encoder(batch).transpose(1, 2).reshape(-1, model.config.hidden_size)
        for layer in model.quantizer.layers:
            pick = torch.randint(0, residual.shape[0], (model.config.codebook_size,))
            rows = residual[pick] + residual.std() * torch.randn_like(residual[pick])
            layer.codebook.embed.copy_(rows)
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
    model.save_pretrained(folder)
    return model


def assert_same_codes_up_to_ties(codec: Codec, latent: Tensor, codes: Tensor, other: Tensor,
                                 max_tie_fraction: float = 1e-3) -> None:
    """``codes`` [K, T] == ``other`` except at frames where, at the first stage that
    differs, both codes are equally near the residual up to float32 rounding (a tie
    between two float computations of the same latent ``latent`` [D, T]); for residual
    VQ codecs. AssertionError otherwise. ``latent`` is the encoder's output: a quantizer
    with a latent norm normalizes it here as it does before its codebooks."""
    assert codes.shape == other.shape
    frames = (codes != other).any(dim=0).nonzero().flatten().tolist()
    assert len(frames) <= max(1, max_tie_fraction * codes.shape[1]), f"{len(frames)} frames"
    norm = getattr(codec.quantizer, "latent_norm", None)
    if norm is not None:
        latent = norm.fixed(latent.T).T
    for t in frames:
        residual = latent[:, t].double()
        for k, codebook in enumerate(codec.quantizer.codebooks):
            embed = codebook.embed.double()
            if codes[k, t] != other[k, t]:
                d_a = (residual - embed[codes[k, t]]).pow(2).sum()
                d_b = (residual - embed[other[k, t]]).pow(2).sum()
                scale = residual.pow(2).sum() + embed[codes[k, t]].pow(2).sum()
                assert abs(d_a - d_b) <= 1e-5 * scale, f"frame {t} stage {k} is not a tie"
                break
            residual = residual - embed[codes[k, t]]


# The configs of the published DAC models, as transformers' DacConfig overrides (its
# defaults are the 44.1 kHz model).
DAC_CONFIGS: dict[str, dict[str, Any]] = {
    "dac_16khz": {"sampling_rate": 16_000, "downsampling_ratios": [2, 4, 5, 8],
                  "n_codebooks": 12},
    "dac_24khz": {"sampling_rate": 24_000, "downsampling_ratios": [2, 4, 5, 8],
                  "n_codebooks": 32},
    "dac_44khz": {},
}


def dac_folder(overrides: dict[str, Any], folder: str | os.PathLike[str], seed: int = 0
               ) -> torch.nn.Module:
    """A transformers ``DacModel`` with random weights (weight norm on, as published),
    saved to ``folder`` in the published layout (needs transformers); returns the model,
    in eval mode."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.DacModel(transformers.DacConfig(**overrides))
    model.apply_weight_norm()
    model.save_pretrained(folder)
    return model.eval()
