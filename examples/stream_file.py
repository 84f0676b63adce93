"""Stream an audio file through a causal codec in 20 ms pieces, as a live link would:
each piece of audio goes into the streaming encoder, the codes that come out go straight
into the streaming decoder, and the audio that comes out is played (here: collected).
Reports the latency and the real-time factor, and checks the result against the whole
pass.

    python examples/stream_file.py AUDIO [--model mmdtok:small-music-causal]
        [--piece-ms 20] [--seconds 10] [--out streamed.wav] [--threads 1]

Printed:

- the algorithmic latency: what the codec makes a listener wait, whatever the computer:
  one frame (a frame's codes come out with its last sample) plus the start-up wait of
  each half (0 extra for zero-padded convolutions, as in small-music-causal);
- the compute per piece (median, 95th percentile, worst) against the piece's duration:
  a link keeps up when the worst piece is computed within its duration;
- the real-time factor (compute seconds per audio second, encoder and decoder
  together, on ``--threads`` threads);
- how the streamed audio compares with ``codec.decode(codec.encode(audio))`` (equal up to
  float rounding, and codes equal up to float ties).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from mmdtok.audio import load_audio, write_audio
from mmdtok.persistence import load_codec
from mmdtok.streaming import NotStreamable, StreamingDecoder, StreamingEncoder


@dataclass(frozen=True)
class StreamReport:
    piece_ms: float
    frame_ms: float
    startup_ms: float  # the encoder's wait beyond one frame plus the decoder's
    compute_ms: list[float]  # per piece, encoder and decoder together
    rtf: float
    codes_equal: float  # the fraction of streamed codes equal to the whole pass's
    max_abs_diff: float  # of the streamed audio against the whole pass's

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: one frame plus the start-up waits (no compute)."""
        return self.frame_ms + self.startup_ms


def stream(encoder: StreamingEncoder, decoder: StreamingDecoder, audio: torch.Tensor,
           piece: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Audio [1, C, L] through ``encoder`` and ``decoder`` in pieces of ``piece`` samples:
    (codes [1, K, T], audio out [1, C, T * hop], compute seconds per piece)."""
    codes, out, times = [], [], []
    for start in range(0, audio.shape[-1], piece):
        begin = time.perf_counter()
        frames = encoder.push(audio[..., start : start + piece])
        sound = decoder.push(frames) if frames.shape[-1] else None
        times.append(time.perf_counter() - begin)
        codes.append(frames)
        if sound is not None:
            out.append(sound)
    last = encoder.flush()
    codes.append(last)
    if last.shape[-1]:
        out.append(decoder.push(last))
    out.append(decoder.flush())
    return torch.cat(codes, -1), torch.cat(out, -1), times


def run(codec, audio: torch.Tensor, piece_ms: float = 20.0) -> tuple[StreamReport,
                                                                     torch.Tensor]:
    """Stream ``audio`` [C, L] at the codec's rate; the report and the streamed audio."""
    sr, hop = codec.sample_rate, codec.hop_length
    piece = max(1, round(piece_ms * sr / 1000))
    audio = audio[None]
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    codes, out, times = stream(encoder, decoder, audio, piece)
    whole_codes = codec.encode(audio)
    whole = codec.decode(whole_codes)
    frame_ms = 1000 * hop / sr
    startup_ms = 1000 * (encoder.startup - hop) / sr + frame_ms * (decoder.startup - 1)
    report = StreamReport(
        piece_ms=1000 * piece / sr, frame_ms=frame_ms, startup_ms=startup_ms,
        compute_ms=[1000 * t for t in times], rtf=sum(times) / (audio.shape[-1] / sr),
        codes_equal=float((codes == whole_codes).float().mean()),
        max_abs_diff=float((out[..., : whole.shape[-1]] - whole).abs().max()))
    return report, out[0, :, : audio.shape[-1]]


def describe(report: StreamReport, threads: int) -> str:
    times = sorted(report.compute_ms)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return "\n".join([
        f"latency (algorithmic): {report.latency_ms:.1f} ms = one frame "
        f"({report.frame_ms:.1f} ms) + start-up {report.startup_ms:.1f} ms",
        f"compute per {report.piece_ms:.1f} ms piece (encode + decode, {threads} "
        f"thread(s)): median {statistics.median(times):.2f} ms, 95th percentile "
        f"{p95:.2f} ms, worst {times[-1]:.2f} ms",
        f"real-time factor: {report.rtf:.3f} (keeps up: "
        f"{'yes' if report.rtf < 1 else 'no'})",
        f"against the whole pass: {report.codes_equal:.2%} of the codes equal (the rest: "
        f"float ties), audio within {report.max_abs_diff:.1e}",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="an audio file (any format soundfile or PyAV reads)")
    parser.add_argument("--model", default="mmdtok:small-music-causal",
                        help="a causal codec (default: the shipped causal codec)")
    parser.add_argument("--piece-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="stream this much of the file (0: all of it)")
    parser.add_argument("--out", help="write the streamed audio to this file")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.piece_ms > 0:
        parser.error(f"--piece-ms must be positive, got {args.piece_ms}")
    torch.set_num_threads(args.threads)
    codec = load_codec(args.model)
    audio, _ = load_audio(args.audio, codec.sample_rate, codec.channels)
    if args.seconds:
        audio = audio[:, : round(args.seconds * codec.sample_rate)]
    try:
        report, out = run(codec, audio, args.piece_ms)
    except NotStreamable as error:
        parser.error(str(error))
    print(f"{args.audio}: {audio.shape[-1] / codec.sample_rate:.1f} s through "
          f"{args.model} ({codec.sample_rate} Hz, {codec.num_codebooks} codebooks)")
    print(describe(report, torch.get_num_threads()))
    if args.out:
        write_audio(args.out, out, codec.sample_rate)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
