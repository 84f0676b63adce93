"""Audio files in and out: soundfile (wav, flac, ogg, mp3) and soxr resampling."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmdtok.atomic import atomic_path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def read_audio(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """Audio [C, L] float32 in [-1, 1] and its sample rate; ValueError for an unreadable
    or empty file."""
    import soundfile

    try:
        data, sample_rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"cannot read audio from {path}: {error}") from error
    if data.shape[0] == 0:
        raise ValueError(f"{path} holds no audio samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def resample(audio: Tensor, source_rate: int, target_rate: int) -> Tensor:
    """Audio [C, L] resampled with soxr (high quality); unchanged if the rates agree."""
    if source_rate == target_rate:
        return audio
    import soxr

    out = soxr.resample(audio.T.contiguous().numpy(), source_rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T))


def match_channels(audio: Tensor, channels: int, source: str = "audio", *,
                   warn: bool = True) -> Tensor:
    """Audio [C, L] down-mixed (mean) or up-mixed (copied) to ``channels``, with a
    warning when it changes (unless ``warn`` is False)."""
    if audio.shape[0] == channels:
        return audio
    if warn:
        warnings.warn(f"{source}: {audio.shape[0]} channel(s) mixed to {channels} for the "
                      "codec", stacklevel=2)
    if channels == 1:
        return audio.mean(dim=0, keepdim=True)
    if audio.shape[0] == 1:
        return audio.expand(channels, -1).contiguous()
    raise ValueError(f"cannot map {audio.shape[0]} channels to {channels}")


def load_audio(path: str | os.PathLike[str], sample_rate: int,
               channels: int) -> tuple[Tensor, int]:
    """Audio [channels, L] at ``sample_rate`` from a file, and the file's own rate."""
    audio, source_rate = read_audio(path)
    audio = match_channels(audio, channels, source=os.fspath(path))
    return resample(audio, source_rate, sample_rate), source_rate


def write_audio(path: str | os.PathLike[str], audio: Tensor, sample_rate: int,
                tags: dict[str, str] | None = None) -> Path:
    """Write audio [C, L] atomically; the format follows the suffix (wav: 16-bit PCM
    unless float is needed; flac, ogg, mp3 as soundfile supports them). ``tags``: text
    fields the format stores (title, comment, software, ...; see :func:`read_tags`)."""
    import soundfile

    data = audio.detach().cpu().float().clamp(-1, 1).T.contiguous().numpy()
    # Encoded in memory, then written by Python: a failed write is an OSError with its
    # cause (libsndfile reports every one as "System error.").
    encoded = io.BytesIO()
    with soundfile.SoundFile(encoded, "w", sample_rate, data.shape[1],
                             format=Path(path).suffix[1:].upper()) as file:
        for name, value in (tags or {}).items():
            setattr(file, name, value)
        file.write(data)
    with atomic_path(path) as temp:
        temp.write_bytes(encoded.getbuffer())
    return Path(path)


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text fields of an audio file (empty when it has none or cannot be read)."""
    import soundfile

    try:
        with soundfile.SoundFile(os.fspath(path)) as file:
            return file.copy_metadata()
    except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError):
        return {}


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES
