"""Token files (``.mmdtok``): the codes of one audio file and what is needed to decode
them, in a safetensors file (no pickle).

Tensors: ``codes`` [K, T] (int16 when the codebook size allows, else int32).
Metadata (strings): format, format_version, codec (name), codec_origin (folder or
repo@commit), codec_fingerprint (hash of the weights), sample_rate, channels,
frame_rate, num_codebooks, codebook_size, length (samples at ``sample_rate``), and
the source's name and sample rate when known.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmdtok.atomic import atomic_path
from mmdtok.limits import check_codebooks
from mmdtok.paths import find_files

FORMAT = "mmdtok-tokens"
FORMAT_VERSION = 1
SUFFIX = ".mmdtok"


@dataclass(frozen=True)
class TokenFile:
    """Codes [K, T] int64 and their metadata."""

    codes: Tensor
    codec: str
    codec_fingerprint: str
    sample_rate: int
    channels: int
    frame_rate: float
    codebook_size: int
    length: int
    codec_origin: str = ""
    source: str = ""
    source_sample_rate: int = 0

    def __post_init__(self) -> None:
        if self.codes.dim() != 2 or self.codes.is_floating_point():
            raise ValueError(f"codes must be an integer tensor [K, T], got "
                             f"{tuple(self.codes.shape)} {self.codes.dtype}")
        check_codebooks(self.num_codebooks, self.codebook_size, "token file")
        for name in ("sample_rate", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.frame_rate < math.inf or self.length < 0:
            raise ValueError(f"frame_rate must be positive and length >= 0, got "
                             f"{self.frame_rate} and {self.length}")
        if self.codes.numel():
            low, high = (int(v) for v in torch.aminmax(self.codes))
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"codes must lie in [0, {self.codebook_size})")

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[0]

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "codec": self.codec,
                "codec_origin": self.codec_origin,
                "codec_fingerprint": self.codec_fingerprint,
                "sample_rate": str(self.sample_rate), "channels": str(self.channels),
                "frame_rate": repr(float(self.frame_rate)),
                "num_codebooks": str(self.num_codebooks),
                "codebook_size": str(self.codebook_size), "length": str(self.length),
                "source": self.source, "source_sample_rate": str(self.source_sample_rate)}


def _storage_dtype(codebook_size: int) -> torch.dtype:
    return torch.int16 if codebook_size <= 2**15 else torch.int32


def save_tokens(path: str | os.PathLike[str], tokens: TokenFile) -> Path:
    """Write ``tokens`` atomically (never a partial file under ``path``)."""
    from safetensors.torch import save_file

    codes = tokens.codes.detach().cpu().to(_storage_dtype(tokens.codebook_size)).contiguous()
    with atomic_path(path) as temp:
        save_file({"codes": codes}, str(temp), metadata=tokens.metadata())
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a token file without reading its codes; ValueError when the file
    is not a token file."""
    return _open(path, codes=False)[0]


def _open(path: str | os.PathLike[str], codes: bool = True) -> tuple[dict[str, str], Tensor | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not an mmdtok token file (format "
                                 f"{meta.get('format')!r})")
            return meta, handle.get_tensor("codes") if codes else None
    except SafetensorError as error:
        raise ValueError(f"{path} is not a safetensors token file: {error}") from error


def load_tokens(path: str | os.PathLike[str]) -> TokenFile:
    """Read a token file; ValueError when it is not one, or from a newer format."""
    meta, codes = _open(path)
    version = _number(path, meta, "format_version", int, "0")
    if version < 1 or version > FORMAT_VERSION:
        raise ValueError(f"{path} has token format version {version}; this mmdtok reads "
                         f"1..{FORMAT_VERSION}: upgrade mmdtok")
    number = lambda name, kind=int, default=None: _number(path, meta, name, kind, default)
    try:
        return TokenFile(codes=codes.long(), codec=_text(path, meta, "codec"),
                         codec_fingerprint=_text(path, meta, "codec_fingerprint"),
                         sample_rate=number("sample_rate"), channels=number("channels"),
                         frame_rate=number("frame_rate", float),
                         codebook_size=number("codebook_size"), length=number("length"),
                         codec_origin=meta.get("codec_origin", ""),
                         source=meta.get("source", ""),
                         source_sample_rate=number("source_sample_rate", int, "0"))
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}"
                         ) from error


def _text(path: str | os.PathLike[str], meta: dict[str, str], name: str) -> str:
    if name not in meta:
        raise ValueError(f"{path} lacks the metadata field {name!r}")
    return meta[name]


def _number(path: str | os.PathLike[str], meta: dict[str, str], name: str, kind: type,
            default: str | None) -> int | float:
    text = meta.get(name, default)
    if text is None:
        raise ValueError(f"{path} lacks the metadata field {name!r}")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{path}: metadata field {name!r} must be "
                         f"{'an integer' if kind is int else 'a number'}, got {text!r}"
                         ) from None


class CodecMismatchError(ValueError):
    """Codes made by one codec given to another (other weights). ``origin``: where the
    encoding codec came from, as the token file recorded it ("" when unknown)."""

    def __init__(self, message: str, origin: str) -> None:
        super().__init__(message)
        self.origin = origin


def check_same_codec(tokens: TokenFile, name: str, fingerprint: str, where: str = "") -> None:
    """Refuse to decode codes made by another codec (other weights):
    :class:`CodecMismatchError` naming both codecs."""
    if tokens.codec_fingerprint != fingerprint:
        made_by = f"{tokens.codec} ({tokens.codec_origin or 'unknown origin'})"
        raise CodecMismatchError(
            f"{where or 'these tokens'} were encoded by codec {made_by} with weights "
            f"{tokens.codec_fingerprint}, but the decoding codec {name} has weights "
            f"{fingerprint}: decode them with the codec that encoded them", tokens.codec_origin)


def is_token_file(path: Path) -> bool:
    return path.suffix == SUFFIX


def find_token_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Token files named directly or found in folders (recursively, sorted per folder);
    ValueError when a path does not exist or there are none."""
    found = [f.path for f in find_files(paths, is_token_file)]
    if not found:
        raise ValueError(f"no token files ({SUFFIX}) in {', '.join(map(str, paths))}")
    return found
