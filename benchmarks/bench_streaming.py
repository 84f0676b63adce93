"""Streaming a causal codec, one process: 20 ms pieces through ``StreamingEncoder`` and
``StreamingDecoder`` against the whole-input ``encode`` / ``decode`` of the same audio.

The codec has the ``encodec-24khz`` layout (causal, hop 320 at 24 kHz: 13.3 ms frames)
with random weights and codebooks fitted to its own latents: the speed does not depend on
what the weights learned. Printed:

- the algorithmic latency: samples of look-ahead (0: a frame's codes come out with the
  last sample of the frame, one frame of latency) and the start-up wait of each half
  (the reflected paddings of the first layers hold the first outputs back);
- the real-time factor of streaming (compute seconds per audio second: the encoder
  pushed 20 ms pieces of audio, the decoder the codes each piece gave), of the
  whole-input pass, and their ratio, for each half and both together;
- the weights each push reads: a stream of small pieces is bound by memory bandwidth
  (the whole pass reads each weight once for many frames, a stream once a push).

    python benchmarks/bench_streaming.py [--model encodec-24khz] [--seconds 10]
        [--repeats 5] [--n-q 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import compare, markdown_table, median_seconds

from mmdtok.streaming import StreamingDecoder, StreamingEncoder
from mmdtok.testing import notes, trained_codebooks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="encodec-24khz",
                        help="a causal preset's layout (random weights, fitted codebooks) "
                             "or a shipped codec, e.g. mmdtok:small-music-causal")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--piece-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-q", type=int, default=8, help="codebooks (8: 6 kbps)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: what one core of a device gives a stream)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.model.startswith("mmdtok:"):
        from mmdtok.persistence import load_codec

        codec = load_codec(args.model)
    else:
        codec = trained_codebooks(args.model)
    n_q = codec.quantizer.resolve_n_q(min(args.n_q, codec.num_codebooks))
    sr, hop = codec.sample_rate, codec.hop_length
    audio = notes(args.seconds, sr, seed=0)[None, : codec.channels]
    piece = round(args.piece_ms * sr / 1000)
    codes = codec.encode(audio, n_q=n_q)
    # the decoder gets the codes as the streaming encoder emits them from the audio's
    # pieces (20 ms of audio: 1 or 2 frames of 13.3 ms), which is how a pipeline feeds it
    encoder = StreamingEncoder(codec, n_q=n_q)
    code_pieces = [encoder.push(audio[..., i : i + piece])
                   for i in range(0, audio.shape[-1], piece)] + [encoder.flush()]
    code_pieces = [c for c in code_pieces if c.shape[-1]]

    def stream_encode() -> torch.Tensor:
        encoder = StreamingEncoder(codec, n_q=n_q)
        out = [encoder.push(audio[..., i : i + piece]) for i in range(0, audio.shape[-1], piece)]
        return torch.cat(out + [encoder.flush()], -1)

    def stream_decode() -> torch.Tensor:
        decoder = StreamingDecoder(codec)
        return torch.cat([decoder.push(c) for c in code_pieces] + [decoder.flush()], -1)

    streamed = stream_encode()
    agree = (streamed == codes).float().mean().item()
    enc_s, enc_w = compare(stream_encode, lambda: codec.encode(audio, n_q=n_q),
                           repeats=args.repeats, warmup=1)
    dec_s, dec_w = compare(stream_decode, lambda: codec.decode(codes),
                           repeats=args.repeats, warmup=1)
    floor = {half: weight_pass_seconds(getattr(codec, half), args.repeats)
             for half in ("encoder", "decoder")}
    decoder = StreamingDecoder(codec)  # for its start-up (the encoder's: the one above)
    ms = 1000 / sr
    pushes = len(range(0, audio.shape[-1], piece)) / args.seconds
    mb = {half: sum(p.numel() * p.element_size() for p in getattr(codec, half).parameters())
          / 1e6 for half in ("encoder", "decoder")}
    print(f"codec: {args.model}, {n_q} codebooks, hop {hop} ({hop * ms:.1f} ms); "
          f"{args.seconds:g} s of audio in {args.piece_ms:g} ms pieces ({piece} samples; "
          f"the decoder gets each piece's codes, {len(code_pieces) / args.seconds:.0f} "
          f"pushes a second); torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"weights: encoder {mb['encoder']:.1f} MB, decoder {mb['decoder']:.1f} MB; a "
          f"stream reads them once a push ({pushes:.0f} a second): "
          f"{(mb['encoder'] + mb['decoder']) * pushes / 1000:.1f} GB per second of audio")
    print(f"look-ahead: 0 samples (a frame's codes come out with its last sample: "
          f"{hop} samples, {hop * ms:.1f} ms, of algorithmic latency)")
    print(f"start-up: the encoder's first codes after {encoder.startup} samples "
          f"({encoder.startup * ms:.1f} ms, {encoder.startup // hop} frames), the decoder's "
          f"first audio after {decoder.startup} frames ({decoder.startup * hop * ms:.1f} ms)")
    print(f"streamed codes equal to the whole pass: {agree:.4%} (the rest: float32 ties)")
    # the floor of a stream: the whole pass's arithmetic plus one read of every weight a
    # push (what a push cannot avoid; the whole pass reads a weight once for many frames)
    low = {"encode": enc_w / args.seconds + pushes * floor["encoder"],
           "decode": dec_w / args.seconds + pushes * floor["decoder"]}
    low["both"] = low["encode"] + low["decode"]
    rows = [[name, f"{s / args.seconds:.3f}", f"{w / args.seconds:.3f}", f"{s / w:.2f}x",
             f"{low[name]:.3f} ({low[name] * args.seconds / w:.2f}x)"]
            for name, s, w in (("encode", enc_s, enc_w), ("decode", dec_s, dec_w),
                               ("both", enc_s + dec_s, enc_w + dec_w))]
    print(markdown_table(["half", "RTF streaming", "RTF whole input", "streaming / whole",
                          "floor: whole + weights read per push"], rows))
    print(f"one read of every weight (a row through each weight matrix): encoder "
          f"{floor['encoder'] * 1e3:.2f} ms, decoder {floor['decoder'] * 1e3:.2f} ms, "
          f"{(mb['encoder'] + mb['decoder']) / 1e3 / (floor['encoder'] + floor['decoder']):.1f}"
          f" GB/s")


def weight_pass_seconds(half: torch.nn.Module, repeats: int) -> float:
    """Seconds to read every weight of ``half`` once the way a push does (one row through
    each weight matrix, all of them in turn, so that none stays in the cache): the
    memory traffic a stream pays at every push."""
    mats = [p.detach().reshape(p.shape[0], -1) for p in half.parameters() if p.dim() >= 2]
    rows = [torch.randn(1, m.shape[0]) for m in mats]

    def one_pass() -> None:
        for m, x in zip(mats, rows):
            x @ m

    return median_seconds(lambda: [one_pass() for _ in range(50)], repeats, warmup=1) / 50


if __name__ == "__main__":
    main()
