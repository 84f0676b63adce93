"""Bounds on the sizes a file may declare (token files, model configs): a crafted or
mistyped number is refused with a message before anything is allocated for it."""

from __future__ import annotations

import numbers

MAX_CODEBOOKS = 1024  # codebooks (streams) per frame; published codecs use 1 to 32
MAX_CODEBOOK_SIZE = 2**20  # entries per codebook; FSQ and large VQ codecs stay below 2^18
MAX_LATENT_DIM = 2**16  # channels of a continuous latent; published VAEs use 32 to 128
MAX_CHANNELS = 64  # audio channels; mono and stereo are what codecs take
MAX_SAMPLE_RATE = 1_000_000  # Hz; audio codecs work at 16 to 48 kHz, files reach 384 kHz


def check_codebooks(num_codebooks: object, codebook_size: object, what: str) -> None:
    """ValueError unless both are integers in 1..MAX_CODEBOOKS and 1..MAX_CODEBOOK_SIZE
    (``what`` names their source in the message)."""
    _check_int("num_codebooks", num_codebooks, MAX_CODEBOOKS, what)
    _check_int("codebook_size", codebook_size, MAX_CODEBOOK_SIZE, what)


def _check_int(name: str, value: object, bound: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
        raise ValueError(f"{what}: {name} must be an integer in 1..{bound:,}, got {value!r}")


def check_latent_dim(latent_dim: object, what: str) -> None:
    """ValueError unless ``latent_dim`` is an integer in 1..MAX_LATENT_DIM."""
    _check_int("latent_dim", latent_dim, MAX_LATENT_DIM, what)


def check_rates(sample_rate: object, channels: object, what: str) -> None:
    """ValueError unless the sample rate and the channel count are integers in
    1..MAX_SAMPLE_RATE and 1..MAX_CHANNELS."""
    _check_int("sample_rate", sample_rate, MAX_SAMPLE_RATE, what)
    _check_int("channels", channels, MAX_CHANNELS, what)


def check_integer(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int: TypeError naming ``name`` unless it is an integer (a bool is
    not; numpy and torch integers are), ValueError unless ``low <= value`` (and
    ``<= high``). For the integer arguments of public functions."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
