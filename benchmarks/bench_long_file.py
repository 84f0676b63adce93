"""Memory of encoding and decoding long files: mmdtok's chunked path against one pass.

The MusicGen codec (``musicgen-32khz``, random weights, codebooks from k-means on its own
latents) encodes and decodes 1, 3 and 10 minutes of 32 kHz audio through
``encode_many`` / ``decode_many``, and 1 minute in one pass (``Codec.encode`` /
``decode`` on the whole tensor). Prints peak resident memory beyond the input, and
checks that the chunked codes of the 1-minute file equal the one-pass codes.

    python benchmarks/bench_long_file.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table
from memory import peak_memory

from mmdtok import Codec
from mmdtok.models import decode_many, encode_many
from mmdtok.testing import assert_same_codes_up_to_ties, notes, trained_codebooks

MIB = 2**20


def chunked_rows(codec: Codec, minutes: int) -> list[list[str]]:
    audio = notes(60.0 * minutes, codec.sample_rate, seed=minutes)
    result: dict[str, list[torch.Tensor]] = {}
    enc_seconds, enc_peak = peak_memory(
        lambda: result.update(codes=encode_many(codec, [audio])))
    dec_seconds, dec_peak = peak_memory(lambda: decode_many(codec, result["codes"]))
    output = f"(output {audio.numel() * 4 / MIB:,.0f} MiB)"
    return [[f"{minutes} min, chunked", "encode", f"{enc_peak / MIB:,.0f} MiB",
             f"{enc_seconds:.1f}"],
            [f"{minutes} min, chunked", "decode", f"{dec_peak / MIB:,.0f} MiB {output}",
             f"{dec_seconds:.1f}"]]


def main() -> None:
    codec = trained_codebooks("musicgen-32khz")
    rows = []
    one_minute = notes(60.0, codec.sample_rate, seed=1)
    with torch.inference_mode():
        seconds, peak = peak_memory(lambda: codec.encode(one_minute[None]))
        rows.append(["1 min, one pass", "encode", f"{peak / MIB:,.0f} MiB", f"{seconds:.1f}"])
        whole = codec.encode(one_minute[None])[0]
        seconds, peak = peak_memory(lambda: codec.decode(whole[None]))
        rows.append(["1 min, one pass", "decode", f"{peak / MIB:,.0f} MiB", f"{seconds:.1f}"])
        latent = codec.encoder(one_minute[None])[0]
    assert_same_codes_up_to_ties(codec, latent, encode_many(codec, [one_minute])[0], whole)
    for minutes in (1, 3, 10):
        rows += chunked_rows(codec, minutes)
        print(rows[-2], rows[-1], flush=True)
    print(markdown_table(["input", "task", "peak memory beyond the input", "seconds"], rows))


if __name__ == "__main__":
    main()
