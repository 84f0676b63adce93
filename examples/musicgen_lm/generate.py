"""Sample music from a trained LM and decode it to audio with the codec of its tokens.

    python -m examples.musicgen_lm.generate runs/lm-delay --codec mmdtok:small-music \\
        --seconds 2 --count 4 --top-k 250 --temperature 1.0 -o out/generated

Writes OUT/sample_<i>.wav and OUT/sample_<i>.mmdtok (the codes, decodable again with
``mmdtok decode``). Unconditional: no prompt, no text. The codec must be the one that
made the LM's training tokens; its weights' fingerprint is checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from examples.musicgen_lm.sampling import generate
from examples.musicgen_lm.train import load_lm
from mmdtok import Codec
from mmdtok.audio import write_audio
from mmdtok.persistence import load_codec
from mmdtok.tokens import save_tokens, token_file


def write_samples(codec: Codec, codes: torch.Tensor, out: Path) -> list[Path]:
    """Decode codes [B, K, T] and write one audio file and one token file per clip."""
    audio, fingerprint = codec.decode(codes), codec.fingerprint()
    written = []
    for i, (clip, code) in enumerate(zip(audio, codes)):
        written.append(write_audio(out / f"sample_{i}.wav", clip, codec.sample_rate))
        save_tokens(out / f"sample_{i}.mmdtok", token_file(
            codec, code, clip.shape[-1], source="generated", fingerprint=fingerprint))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an LM run folder (lm.json, lm.safetensors)")
    parser.add_argument("--codec", required=True,
                        help="the codec of the training tokens: mmdtok:NAME, folder or Hub id")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="length of each sample (at most the LM's context)")
    parser.add_argument("--count", type=int, default=1, help="number of samples")
    parser.add_argument("--top-k", type=int, default=250, help="0: sample from all codes")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model, info = load_lm(args.run)
        codec = load_codec(args.codec)
        if codec.fingerprint() != info["codec_fingerprint"]:
            raise ValueError(f"{args.codec} is not the codec the LM's tokens came from "
                             f"({info['codec_origin'] or info['codec_fingerprint']})")
        frames = max(1, round(args.seconds * codec.frame_rate))
        generator = torch.Generator().manual_seed(args.seed)
        codes = generate(model, frames, args.count, top_k=args.top_k,
                         temperature=args.temperature, generator=generator)
        written = write_samples(codec, codes, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(map(str, written)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
