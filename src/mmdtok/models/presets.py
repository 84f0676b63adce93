"""Named codec configurations, in one dict.

- ``musicgen-32khz``: the codec MusicGen models (and the paper regularizes): mono 32 kHz,
  hop 640 (50 frames/s), 4 x 2048 RVQ (2.2 kbps), about 57 M parameters.
- ``encodec-24khz``: EnCodec's causal 24 kHz model: hop 320 (75 frames/s), 32 x 1024
  RVQ (1.5 to 24 kbps as a prefix of the codebooks), conv skips.
- ``small-music``: a small mono 24 kHz codec meant to be trained on a CPU: 16 filters,
  64-dim latent, one LSTM layer, 4 x 1024 RVQ with codebook dropout (3 kbps) on the
  normalized latent (``latent_norm``), EnCodec's dead-code threshold (an EMA count of 2:
  at batch 8 x 1 s most codes are re-seeded from the batch at every step, which keeps
  them in use).
- ``small-music-causal``: ``small-music`` with causal, zero-padded convolutions (the same
  weights' shapes): every layer only looks back, and zero padding makes no layer wait for
  samples to reflect, so a stream's first codes come out after one frame; the codec that
  streams (:mod:`mmdtok.streaming`).
- ``small-vae``: the continuous family, the shape of Stable Audio 2's autoencoder scaled to
  a CPU: 44.1 kHz stereo, encoder strides [2, 4, 4, 8, 8] (2,048x downsampling, 21.5
  latent frames/s), 64 latent channels behind a VAE bottleneck seen as 4 groups of 16,
  Snake activations, 8 filters doubled at each stride, one LSTM layer.
- ``dac-16khz``, ``dac-24khz``, ``dac-44khz``: the architectures of the published DAC
  models (descript/dac_*: 12, 32 and 9 factorized codebooks of 1,024 codes looked up in 8
  dimensions; 50, 75 and 86 frames/s), for fine-tuning their weights with ``init_from``.
- ``small-dac``: DAC's architecture scaled to a CPU: mono 24 kHz, ratios [2, 4, 5, 8]
  (75 frames/s), 8 encoder and 128 decoder channels, 4 x 1024 factorized codebooks (3
  kbps) with codebook dropout.
"""

from __future__ import annotations

from typing import Any

from mmdtok.models.config import CodecConfig
from mmdtok.models.dac import DACConfig
from mmdtok.models.seanet import SEANetConfig


def _rvq(num_codebooks: int, codebook_size: int, codebook: dict[str, Any] | None = None,
         **options: Any) -> dict[str, Any]:
    """An EMA residual VQ with k-means initialization and EnCodec's dead-code count;
    ``codebook`` and ``options`` override."""
    return {"kind": "rvq", "num_codebooks": num_codebooks, "codebook_size": codebook_size,
            "codebook": {"decay": 0.99, "kmeans_iters": 50, "dead_code_threshold": 2.0,
                         "dead_code_unit": "count", **(codebook or {})}, **options}


def _dac(name: str, sample_rate: int, ratios: tuple[int, ...], num_codebooks: int,
         encoder_dim: int = 64, decoder_dim: int = 1536, **options: Any) -> CodecConfig:
    """A DAC network with its factorized quantizer (1,024 codes in 8 dimensions), in the
    form :func:`mmdtok.convert.codec_config_from_dac` gives the published models."""
    return CodecConfig(name=name, sample_rate=sample_rate,
                       dac=DACConfig(encoder_dim=encoder_dim, decoder_dim=decoder_dim,
                                     ratios=ratios),
                       quantizer={"kind": "factorized", "num_codebooks": num_codebooks,
                                  "codebook_size": 1024, "codebook_dim": 8, **options})


PRESETS: dict[str, CodecConfig] = {
    "musicgen-32khz": CodecConfig(
        name="musicgen-32khz", sample_rate=32_000,
        seanet=SEANetConfig(n_filters=64, ratios=(8, 5, 4, 4), causal=False,
                            conv_shortcut=False),
        quantizer=_rvq(4, 2048)),
    "encodec-24khz": CodecConfig(
        name="encodec-24khz", sample_rate=24_000,
        seanet=SEANetConfig(n_filters=32, ratios=(8, 5, 4, 2), causal=True,
                            conv_shortcut=True),
        quantizer=_rvq(32, 1024, codebook_dropout="uniform")),
    "small-music": CodecConfig(
        name="small-music", sample_rate=24_000,
        seanet=SEANetConfig(dimension=64, n_filters=16, ratios=(8, 5, 4, 2), lstm_layers=1),
        quantizer=_rvq(4, 1024, {"kmeans_iters": 20}, codebook_dropout="uniform",
                       latent_norm=True)),
    "small-music-causal": CodecConfig(
        name="small-music-causal", sample_rate=24_000,
        seanet=SEANetConfig(dimension=64, n_filters=16, ratios=(8, 5, 4, 2), lstm_layers=1,
                            causal=True, pad_mode="constant"),
        quantizer=_rvq(4, 1024, {"kmeans_iters": 20}, codebook_dropout="uniform",
                       latent_norm=True)),
    "small-vae": CodecConfig(
        name="small-vae", sample_rate=44_100,
        seanet=SEANetConfig(channels=2, dimension=64, n_filters=8, ratios=(8, 8, 4, 4, 2),
                            lstm_layers=1, activation="snake"),
        quantizer={"kind": "vae", "groups": 4}),
    "dac-16khz": _dac("dac-16khz", 16_000, (2, 4, 5, 8), 12),
    "dac-24khz": _dac("dac-24khz", 24_000, (2, 4, 5, 8), 32),
    "dac-44khz": _dac("dac-44khz", 44_100, (2, 4, 8, 8), 9),
    "small-dac": _dac("small-dac", 24_000, (2, 4, 5, 8), 4, encoder_dim=8, decoder_dim=128,
                      codebook_dropout="uniform"),
}


def preset(name: str) -> CodecConfig:
    """The config registered as ``name``; ValueError listing the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown codec preset {name!r}; presets: {sorted(PRESETS)}") from None

