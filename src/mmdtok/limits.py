"""Bounds on the sizes a file may declare (token files, model configs): a crafted or
mistyped number is refused with a message before anything is allocated for it."""

from __future__ import annotations

MAX_CODEBOOKS = 1024  # codebooks (streams) per frame; published codecs use 1 to 32
MAX_CODEBOOK_SIZE = 2**20  # entries per codebook; FSQ and large VQ codecs stay below 2^18


def check_codebooks(num_codebooks: object, codebook_size: object, what: str) -> None:
    """ValueError unless both are integers in 1..MAX_CODEBOOKS and 1..MAX_CODEBOOK_SIZE
    (``what`` names their source in the message)."""
    for name, value, bound in (("num_codebooks", num_codebooks, MAX_CODEBOOKS),
                               ("codebook_size", codebook_size, MAX_CODEBOOK_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise ValueError(f"{what}: {name} must be an integer in 1..{bound:,}, got "
                             f"{value!r}")
