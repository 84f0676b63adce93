"""Codec quality on held-out audio: SI-SDR, multi-scale mel distance and how the
codebooks are used. The trainer runs it on the validation split; the model card of the
shipped codec reports it on the test split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmdtok.audio import load_audio
from mmdtok.losses.spectral import mel_distance, si_sdr
from mmdtok.metrics import codebook_usage
from mmdtok.models import CodecModel
from mmdtok.quantizers.base import to_rows


@dataclass(frozen=True)
class CodecQuality:
    """Averages over the clips of a held-out set.

    si_sdr: scale-invariant SDR in dB (higher is better); mel_distance: the normalized
    multi-scale mel loss (lower is better); perplexities: ``exp(entropy)`` of each
    codebook's codes over all frames (at most the codebook size); utilization: the share
    of each codebook's entries used at least once (both empty for a continuous codec).
    """

    si_sdr: float
    mel_distance: float
    perplexities: tuple[float, ...]
    utilization: tuple[float, ...]
    clips: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        """Flat names for logs: ``si_sdr``, ``mel_distance``, ``perplexity_k``, ..."""
        return {"si_sdr": self.si_sdr, "mel_distance": self.mel_distance,
                **{f"perplexity_{k}": p for k, p in enumerate(self.perplexities)},
                **{f"utilization_{k}": u for k, u in enumerate(self.utilization)}}


def load_clips(paths: Sequence[str | Path], sample_rate: int, channels: int,
               max_seconds: float | None = None) -> list[Tensor]:
    """The files as [C, L] tensors at ``sample_rate``, each cut to ``max_seconds``."""
    clips = []
    for path in paths:
        audio, _ = load_audio(path, sample_rate, channels)
        if max_seconds is not None:
            audio = audio[:, : round(max_seconds * sample_rate)]
        clips.append(audio)
    return clips


@torch.inference_mode()
def evaluate_codec(codec: CodecModel, clips: Sequence[Tensor], n_q: int | None = None
                   ) -> tuple[CodecQuality, Tensor]:
    """Encode and decode each clip [C, L] alone (no padding shared between clips) with the
    first ``n_q`` codebooks (default all); returns the quality and the first clip's
    reconstruction [C, L] (for listening)."""
    n_q = codec.quantizer.resolve_n_q(n_q)
    qualities, first = evaluate_bitrates(codec, clips, [n_q])
    return qualities[n_q], first


@torch.inference_mode()
def evaluate_bitrates(codec: CodecModel, clips: Sequence[Tensor], prefixes: Sequence[int]
                      ) -> tuple[dict[int, CodecQuality], Tensor]:
    """:func:`evaluate_codec` at several bitrates (the first ``k`` codebooks, for each k
    of ``prefixes``), each clip encoded once and decoded once per bitrate; the first
    clip's reconstruction at the first of ``prefixes``."""
    if not clips:
        raise ValueError("no clips to evaluate on")
    if not prefixes:
        raise ValueError("no bitrates to evaluate at (prefixes is empty)")
    prefixes = sorted({codec.quantizer.resolve_n_q(k) for k in prefixes})
    was_training = codec.training
    codec.eval()
    try:
        scores = {k: ([], []) for k in prefixes}  # SI-SDR, mel distance
        codes, first = [], None
        device = next(codec.parameters()).device
        for clip in clips:
            audio = clip.to(device)[None]
            frames = codec.encode(audio, max(prefixes))
            codes.append(frames[0].cpu())
            for k in prefixes:
                kept = frames if codec.continuous else frames[:, :k]
                decoded = codec.decode(kept, length=audio.shape[-1])
                scores[k][0].append(float(si_sdr(decoded, audio)[0]))
                scores[k][1].append(float(mel_distance(decoded, audio, codec.sample_rate)))
                first = decoded[0].cpu() if first is None else first
    finally:
        codec.train(was_training)
    seconds = sum(clip.shape[-1] for clip in clips) / codec.sample_rate
    joined = torch.cat(codes, dim=-1)
    qualities = {}
    for k, (sdrs, mels) in scores.items():
        usage = None if codec.continuous else codebook_usage(joined[None, :k],
                                                             codec.codebook_size)
        qualities[k] = CodecQuality(  # a continuous latent has no codebooks to count
            sum(sdrs) / len(sdrs), sum(mels) / len(mels),
            tuple(usage.perplexity.tolist()) if usage else (),
            tuple(usage.utilization.tolist()) if usage else (), len(clips), seconds)
    return qualities, first


@torch.no_grad()
def recalibrate_latent_norm(codec: CodecModel, batches: Iterable[Tensor]) -> bool:
    """Set the statistics of the quantizer's latent norm (``ResidualVQ(latent_norm=True)``)
    to those of ``codec``'s own encoder over ``batches`` of audio [B, C, L].

    During training the moving averages follow a moving encoder; a codec exported from a
    weight average has an encoder of its own. Recalibrating (as one does for batch norms
    after averaging weights) makes inference normalize with the statistics of the
    weights that are used. Batches whose encoding is not finite are skipped. Returns
    False (and changes nothing) for a codec without a latent norm."""
    norm = getattr(codec.quantizer, "latent_norm", None)
    if norm is None:
        return False
    count, first, second = 0, 0.0, 0.0
    was_training = codec.training
    codec.eval()
    try:
        for audio in batches:
            rows = to_rows(codec.encoder(audio.to(norm.mean.device))).double()
            if not bool(torch.isfinite(rows).all()):  # a NaN file: skipped, as in training
                continue
            mean, var = rows.mean(dim=0), rows.var(dim=0, unbiased=False)
            count += rows.shape[0]
            first = first + mean * rows.shape[0]
            second = second + (var + mean.pow(2)) * rows.shape[0]
    finally:
        codec.train(was_training)
    if count == 0:
        raise ValueError("no batches with finite values to recalibrate on")
    mean = first / count
    norm.mean.copy_(mean.to(norm.mean.dtype))
    norm.var.copy_((second / count - mean.pow(2)).clamp(min=0).to(
        norm.var.dtype))
    norm.initialized.fill_(True)
    return True
