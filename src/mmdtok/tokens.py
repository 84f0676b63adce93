"""Token files (``.mmdtok``) and latent files (``.mmdlat``): what a codec made of one
audio file and what is needed to decode it, in a safetensors file (no pickle).

A token file holds ``codes`` [K, T] (int16 when the codebook size allows, else int32);
a latent file, written for a codec with a continuous bottleneck, holds ``latents``
[D, T] (float16 by default, or float32). Metadata (strings) of both: format,
format_version, codec (name), codec_origin (folder or repo@commit), codec_fingerprint
(hash of all the weights), codes_fingerprint (hash of what the codes mean: the encoder
and quantizer, not the decoder; absent from files of mmdtok 0.x before it), sample_rate, channels, frame_rate, length (samples at
``sample_rate``), the source's name and sample rate when known; a token file adds
num_codebooks and codebook_size, a latent file latent_dim, dtype and groups (the
codec's streams: channel groups of the latent).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from mmdtok.atomic import save_safetensors
from mmdtok.limits import check_codebooks, check_latent_dim, check_rates
from mmdtok.paths import find_files

FORMAT = "mmdtok-tokens"
FORMAT_VERSION = 1
SUFFIX = ".mmdtok"
LATENT_FORMAT = "mmdtok-latents"
LATENT_FORMAT_VERSION = 1
LATENT_SUFFIX = ".mmdlat"
LATENT_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True, kw_only=True)
class EncodedFile:
    """What token and latent files share: the codec that made them and the audio's
    rates and length."""

    codec: str
    codec_fingerprint: str
    sample_rate: int
    channels: int
    frame_rate: float
    length: int
    codec_origin: str = ""
    source: str = ""
    source_sample_rate: int = 0
    codes_fingerprint: str = ""  # what the codes mean ("": a file written before it)

    def __post_init__(self) -> None:
        check_rates(self.sample_rate, self.channels, "the file")
        if not 0 < self.frame_rate < math.inf or self.length < 0:
            raise ValueError(f"frame_rate must be positive and length >= 0, got "
                             f"{self.frame_rate} and {self.length}")
        frames = expected_frames(self.length, self.sample_rate, self.frame_rate)
        if self.num_frames != frames:
            raise ValueError(f"length {self.length} samples at sample_rate "
                             f"{self.sample_rate} Hz make {frames} frames at frame_rate "
                             f"{self.frame_rate:g} Hz, but the "
                             f"{'latents' if isinstance(self, LatentFile) else 'codes'} "
                             f"hold {self.num_frames}")

    @property
    def num_frames(self) -> int:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    def metadata(self) -> dict[str, str]:
        return {"codec": self.codec, "codec_origin": self.codec_origin,
                "codec_fingerprint": self.codec_fingerprint,
                "sample_rate": str(self.sample_rate), "channels": str(self.channels),
                "frame_rate": repr(float(self.frame_rate)), "length": str(self.length),
                "source": self.source, "source_sample_rate": str(self.source_sample_rate),
                **({"codes_fingerprint": self.codes_fingerprint}
                   if self.codes_fingerprint else {})}


@dataclass(frozen=True, kw_only=True)
class TokenFile(EncodedFile):
    """Codes [K, T] int64 and their metadata."""

    codes: Tensor
    codebook_size: int

    def __post_init__(self) -> None:
        if self.codes.dim() != 2 or self.codes.is_floating_point():
            raise ValueError(f"codes must be an integer tensor [K, T], got "
                             f"{tuple(self.codes.shape)} {self.codes.dtype}")
        check_codebooks(self.num_codebooks, self.codebook_size, "token file")
        super().__post_init__()
        if self.codes.numel():
            low, high = (int(v) for v in torch.aminmax(self.codes))
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"codes must lie in [0, codebook_size) = [0, "
                                 f"{self.codebook_size}), got values in [{low}, {high}]")

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[0]

    @property
    def tensor(self) -> Tensor:
        """What the codec decodes: the codes."""
        return self.codes

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                **super().metadata(), "num_codebooks": str(self.num_codebooks),
                "codebook_size": str(self.codebook_size)}


@dataclass(frozen=True, kw_only=True)
class LatentFile(EncodedFile):
    """A continuous latent [D, T] (float) and its metadata; ``dtype``: how it is stored,
    ``"float16"`` (default) or ``"float32"``."""

    latents: Tensor
    dtype: str = "float16"
    groups: int = 1  # the codec's streams: channel groups of the latent

    def __post_init__(self) -> None:
        if self.latents.dim() != 2 or not self.latents.is_floating_point():
            raise ValueError(f"latents must be a floating-point tensor [D, T], got "
                             f"{tuple(self.latents.shape)} {self.latents.dtype}")
        check_latent_dim(self.latent_dim, "latent file")
        if self.dtype not in LATENT_DTYPES:
            raise ValueError(f"latent dtype must be one of {sorted(LATENT_DTYPES)}, got "
                             f"{self.dtype!r}")
        super().__post_init__()
        if self.groups < 1 or self.latent_dim % self.groups:
            raise ValueError(f"groups must divide the {self.latent_dim} latent channels, got "
                             f"{self.groups}")
        if self.latents.numel() and not bool(torch.isfinite(self.latents).all()):
            raise ValueError("the latents contain NaN or infinite values")
        if self.dtype == "float16" and self.latents.numel() and float(
                self.latents.abs().max()) > torch.finfo(torch.float16).max:
            raise ValueError("the latents exceed the float16 range: store them as float32")

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[0]

    @property
    def tensor(self) -> Tensor:
        """What the codec decodes: the latents."""
        return self.latents

    @property
    def num_frames(self) -> int:
        return self.latents.shape[1]

    def metadata(self) -> dict[str, str]:
        return {"format": LATENT_FORMAT, "format_version": str(LATENT_FORMAT_VERSION),
                **super().metadata(), "latent_dim": str(self.latent_dim), "dtype": self.dtype,
                "groups": str(self.groups)}


def expected_frames(length: int, sample_rate: int, frame_rate: float) -> int:
    """The frames a codec makes of ``length`` samples: ``ceil(length / hop)``, with
    ``hop = sample_rate / frame_rate`` (in integers when the hop is a whole number)."""
    hop = sample_rate / frame_rate
    if abs(hop - round(hop)) < 1e-6 * hop:
        return -(-length // round(hop))
    return math.ceil(length / hop - 1e-9)


class EncodingCodec(Protocol):
    """What :func:`token_file` reads of a codec (``mmdtok.models.CodecModel`` has it)."""

    config: Any  # .name
    origin: str
    sample_rate: int
    channels: int
    frame_rate: float
    continuous: bool
    num_codebooks: int
    codebook_size: int

    def fingerprint(self) -> str: ...

    def codes_fingerprint(self) -> str: ...


def token_file(codec: EncodingCodec, codes: Tensor, length: int, *, source: str = "",
               source_sample_rate: int = 0, fingerprint: str | None = None,
               codes_fingerprint: str | None = None,
               dtype: str = "float16") -> TokenFile | LatentFile:
    """The token file of ``codes`` [K, T] that ``codec`` made from ``length`` samples:
    the codec's name, origin, weights and rates recorded so that decoding finds the codec
    again and refuses another. ``fingerprint``, ``codes_fingerprint``: the codec's, when
    already computed. For a continuous codec ``codes`` is the latent [D, T] and the
    result a latent file stored as ``dtype``."""
    common = {"codec": codec.config.name,
              "codec_fingerprint": fingerprint or codec.fingerprint(),
              "codes_fingerprint": codes_fingerprint or codec.codes_fingerprint(),
              "codec_origin": codec.origin, "sample_rate": codec.sample_rate,
              "channels": codec.channels, "frame_rate": codec.frame_rate, "length": length,
              "source": source, "source_sample_rate": source_sample_rate}
    if codec.continuous:
        return LatentFile(latents=codes.cpu(), dtype=dtype, groups=codec.num_codebooks,
                          **common)
    return TokenFile(codes=codes.cpu(), codebook_size=codec.codebook_size, **common)


def _storage_dtype(codebook_size: int) -> torch.dtype:
    return torch.int16 if codebook_size <= 2**15 else torch.int32


def save_tokens(path: str | os.PathLike[str], tokens: TokenFile) -> Path:
    """Write ``tokens`` atomically (never a partial file under ``path``)."""
    codes = tokens.codes.detach().cpu().to(_storage_dtype(tokens.codebook_size)).contiguous()
    return _save(path, "codes", codes, tokens.metadata())


def save_latents(path: str | os.PathLike[str], latents: LatentFile) -> Path:
    """Write ``latents`` atomically, in their ``dtype``."""
    values = latents.latents.detach().cpu().to(LATENT_DTYPES[latents.dtype]).contiguous()
    return _save(path, "latents", values, latents.metadata())


def save_encoded(path: str | os.PathLike[str], encoded: EncodedFile) -> Path:
    """A token file or a latent file, as :func:`save_tokens` or :func:`save_latents`."""
    if isinstance(encoded, LatentFile):
        return save_latents(path, encoded)
    return save_tokens(path, encoded)


def _save(path: str | os.PathLike[str], name: str, tensor: Tensor,
          metadata: dict[str, str]) -> Path:
    return save_safetensors(path, {name: tensor}, metadata)


_TENSORS = {FORMAT: "codes", LATENT_FORMAT: "latents"}
_KIND = {FORMAT: "token", LATENT_FORMAT: "latent"}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a token or latent file without reading its tensor; ValueError when
    the file is neither."""
    return _open(path, tuple(_TENSORS), tensor=False)[0]


def _open(path: str | os.PathLike[str], formats: tuple[str, ...], tensor: bool = True
          ) -> tuple[dict[str, str], Tensor | None]:
    from safetensors import SafetensorError, safe_open

    what = " or ".join(f"an mmdtok {_KIND[f]} file" for f in formats)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") not in formats:
                raise ValueError(f"{path} is not {what} (format {meta.get('format')!r})")
            return meta, handle.get_tensor(_TENSORS[meta["format"]]) if tensor else None
    except SafetensorError as error:
        raise ValueError(f"{path} is not a safetensors {_KIND[formats[0]]} file: {error}"
                         ) from error


def load_tokens(path: str | os.PathLike[str]) -> TokenFile:
    """Read a token file; ValueError when it is not one, or from a newer format."""
    meta, codes = _open(path, (FORMAT,))
    return _read(path, meta, codes)


def load_latents(path: str | os.PathLike[str]) -> LatentFile:
    """Read a latent file (latents as float32); ValueError when it is not one, or from a
    newer format."""
    meta, latents = _open(path, (LATENT_FORMAT,))
    return _read(path, meta, latents)


def load_encoded(path: str | os.PathLike[str]) -> TokenFile | LatentFile:
    """A token file or a latent file, whichever ``path`` holds."""
    meta, tensor = _open(path, tuple(_TENSORS))
    return _read(path, meta, tensor)


def _read(path: str | os.PathLike[str], meta: dict[str, str], tensor: Tensor
          ) -> TokenFile | LatentFile:
    kind = meta["format"]
    newest = FORMAT_VERSION if kind == FORMAT else LATENT_FORMAT_VERSION
    version = _number(path, meta, "format_version", int, "0")
    if version < 1 or version > newest:
        raise ValueError(f"{path} has {_KIND[kind]} format version {version}; this mmdtok "
                         f"reads 1..{newest}: upgrade mmdtok")
    number = lambda name, kind=int, default=None: _number(path, meta, name, kind, default)
    try:
        common = dict(codec=_text(path, meta, "codec"),
                      codec_fingerprint=_text(path, meta, "codec_fingerprint"),
                      sample_rate=number("sample_rate"), channels=number("channels"),
                      frame_rate=number("frame_rate", float), length=number("length"),
                      codec_origin=meta.get("codec_origin", ""), source=meta.get("source", ""),
                      source_sample_rate=number("source_sample_rate", int, "0"),
                      codes_fingerprint=meta.get("codes_fingerprint", ""))
        if kind == FORMAT:
            _agrees(meta, "num_codebooks", tensor.shape[0], "the codes' rows")
            if tensor.is_floating_point() or tensor.dtype == torch.bool:
                raise ValueError(f"the codes are stored as {tensor.dtype}, not integers")
            return TokenFile(codes=tensor.long(), codebook_size=number("codebook_size"),
                             **common)
        dtype = meta.get("dtype", "float16")
        if LATENT_DTYPES.get(dtype, tensor.dtype) != tensor.dtype:
            raise ValueError(f"the metadata say dtype {dtype}, but the latents are stored "
                             f"as {str(tensor.dtype).removeprefix('torch.')}")
        _agrees(meta, "latent_dim", tensor.shape[0], "the latents' channels")
        return LatentFile(latents=tensor.float(), dtype=dtype,
                          groups=number("groups", int, "1"), **common)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}"
                         ) from error


def _agrees(meta: dict[str, str], name: str, actual: int, what: str) -> None:
    """ValueError when the metadata field ``name`` (when present) is not ``actual``."""
    if name in meta and meta[name] != str(actual):
        raise ValueError(f"the metadata say {name} {meta[name]}, but {what} number {actual}")


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


def check_same_codec(tokens: EncodedFile, name: str, fingerprint: str, where: str = "",
                     codes_fingerprint: str = "",
                     shipped: Callable[[], dict[str, str]] | None = None) -> None:
    """Refuse to decode codes (or latents) that mean something else to the decoding
    codec: :class:`CodecMismatchError` naming both codecs. ``fingerprint`` and
    ``codes_fingerprint`` are the decoding codec's (:meth:`CodecModel.fingerprint`,
    :meth:`CodecModel.codes_fingerprint`).

    The codes are accepted when they were made by the same weights, or by a codec with
    the same encoder and codebooks (the same ``codes_fingerprint``: another decoder
    behind the same codes). A file written before token files recorded what their codes
    mean carries the weights' fingerprint alone: it is accepted when that is the
    decoding codec's, or when ``shipped()`` ({weights fingerprint: codes fingerprint} of
    the codecs shipped in the package, :func:`mmdtok.persistence.bundled_codes_fingerprints`)
    maps it to the decoding codec's codes fingerprint (the default codec's files from
    before its new decoder)."""
    if tokens.codec_fingerprint == fingerprint:
        return
    if codes_fingerprint:
        made = tokens.codes_fingerprint or (shipped() if shipped else {}).get(
            tokens.codec_fingerprint, "")
        if made == codes_fingerprint:
            return
    made_by = f"{tokens.codec} ({tokens.codec_origin or 'unknown origin'})"
    codes = f" (codes {tokens.codes_fingerprint})" if tokens.codes_fingerprint else ""
    mine = f" (codes {codes_fingerprint})" if codes_fingerprint else ""
    raise CodecMismatchError(
        f"{where or 'these tokens'} were encoded by codec {made_by} with weights "
        f"{tokens.codec_fingerprint}{codes}, but the decoding codec {name} has weights "
        f"{fingerprint}{mine}, another encoder or codebooks: decode them with the codec "
        f"that encoded them", tokens.codec_origin)


def is_token_file(path: Path) -> bool:
    return path.suffix == SUFFIX


def is_latent_file(path: Path) -> bool:
    return path.suffix == LATENT_SUFFIX


def is_encoded_file(path: Path) -> bool:
    """A token file or a latent file, by its suffix."""
    return path.suffix in (SUFFIX, LATENT_SUFFIX)


def find_token_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Token files named directly or found in folders (recursively, sorted per folder);
    ValueError when a path does not exist or there are none."""
    found = [f.path for f in find_files(paths, is_token_file, f"token file ({SUFFIX})")]
    if not found:
        raise ValueError(f"no token files ({SUFFIX}) in {', '.join(map(str, paths))}")
    return found
