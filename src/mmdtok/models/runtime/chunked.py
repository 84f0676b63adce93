"""Chunked encoding and decoding: long inputs, or many inputs of different lengths, in
bounded memory, with exactly the output of one pass over each whole input. (Offline:
the whole input is there; real-time streaming is :mod:`mmdtok.streaming`.)

Why it is exact. Each half is a :class:`~mmdtok.models.runtime.stack.LayerStack`, seen
as ``front -> recurrent layer -> back`` (no recurrent layer: all front). The layers of
the front and the back tell their reach, so the stages see a bounded number of frames on
each side (``front_context``, ``back_context``), so
a piece of frames computed with that much real context on both sides equals the same
frames of the whole pass; pieces that touch an end of the input are cut exactly at that
end, so they pad it as the whole pass does. The recurrent layer only looks back: it runs over
consecutive windows with its state carried from one window to the next. A stage after
the LSTM waits ``context`` frames (a lag) before emitting the frames whose right
context it now has. There is no overlap-add and no cross-fade, so there are no seams.

Why it is fast. The convolutions run on pieces of ``piece`` frames stacked into
batches (on a CPU a batch of short pieces is faster than one long sequence), pooled
across all the inputs in flight: a scheduler drives one generator per input and runs
every request of the same shape together. Memory is bounded by ``window`` frames per
input and a bounded batch of pieces per call, whatever the input lengths.

    input  |<------------------------------ T frames ----------------------------->|
    window |<----- window w ----->|<---- window w+1 ---->|
    pieces |<-c-|== piece ==|-c->|
                  kept frames
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdtok.limits import check_integer
from mmdtok.models.codec import CodecModel
from mmdtok.models.runtime.stack import LayerStack

# A request is a list of (stage name, batch-first tensors with batch 1); the scheduler
# answers with one tuple of batch-first outputs per item.
Item = tuple[str, tuple[Tensor, ...]]
Job = Generator[list[Item], list[tuple[Tensor, ...]], Tensor]


# A piece is at least this many times its stage's context, so that the context computed
# again on both sides costs at most 2 / CONTEXT_SHARE of the work (a sixth): a stage that
# reaches far at the frame rate (the frame-rate decoder: 35 frames) gets long pieces, the
# SEANet stages (7 frames) keep ``ChunkSettings.piece``.
CONTEXT_SHARE = 12


@dataclass(frozen=True)
class Piece:
    """Input frames [start, end) computed together; output frames [keep_start, keep_end)
    of them (relative to ``start``) are exact."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def split_pieces(first: int, last: int, avail: tuple[int, int], piece: int,
                 context: int) -> list[Piece]:
    """Pieces covering output frames [first, last) from input frames available in
    ``avail`` = [begin, end). Every piece that is not clipped by ``avail`` has the same
    length ``piece + 2 * context``, so that pieces batch together."""
    begin, end = avail
    piece = max(piece, CONTEXT_SHARE * context)
    pieces = []
    for p0 in range(first, last, piece):
        p1 = min(p0 + piece, last)
        start = max(begin, p0 - context)
        stop = min(end, start + piece + 2 * context)
        if stop < min(end, p1 + context):
            raise AssertionError("piece without its right context")
        pieces.append(Piece(start, stop, p0 - start, p1 - start))
    return pieces


@dataclass(frozen=True)
class ChunkSettings:
    """window: frames per window of the recurrent stage (bounds memory per input);
    piece: frames per piece of the convolution stages (at least 12 times the stage's
    context, see ``CONTEXT_SHARE``); max_batch: pieces per call, or
    ``None`` to batch as many as keep the largest activation of a call (the first
    layer's, at the audio rate) under ``activation_bytes``.

    The default budget stays under glibc's largest mmap threshold (32 MiB): bigger
    buffers are mapped fresh from the system at every layer (page faults, zeroing),
    smaller ones are recycled; measured on the MusicGen codec, 10 s encode 0.69 s with
    one 100-frame piece per call against 1.07 s with four.
    """

    window: int = 1500
    piece: int = 100
    max_batch: int | None = None
    activation_bytes: int = 24 << 20

    def __post_init__(self) -> None:
        for name in ("window", "piece", "activation_bytes") + (
                ("max_batch",) if self.max_batch is not None else ()):
            check_integer(name, getattr(self, name), 1)

    def batch_for(self, bytes_per_item: int) -> int:
        if self.max_batch is not None:
            return self.max_batch
        return max(1, self.activation_bytes // max(1, bytes_per_item))


def _lagged_stage(stage: str, buffer: Tensor, buffer_start: int, first: int, last: int,
                  total: int, settings: ChunkSettings, context: int,
                  scale: int) -> Generator[list[Item], list[tuple[Tensor, ...]], Tensor]:
    """Output of ``stage`` for frames [first, last) from ``buffer`` [1, D, n] holding
    input frames [buffer_start, buffer_start + n); ``scale`` output samples per frame."""
    avail = (buffer_start, buffer_start + buffer.shape[-1])
    if avail[1] < total and last + context > avail[1]:
        raise AssertionError("lagged stage asked for frames beyond its right context")
    pieces = split_pieces(first, last, avail, settings.piece, context)
    results = yield [(stage, (buffer[..., p.start - buffer_start : p.end - buffer_start],))
                     for p in pieces]
    return torch.cat([out[0][..., p.keep_start * scale : p.keep_end * scale]
                      for out, p in zip(results, pieces)], dim=-1)


def _recurrent(half: LayerStack, x: Tensor, state: tuple[Tensor, ...] | None,
               stage: str) -> Generator[list[Item], list[tuple[Tensor, ...]],
                                        tuple[Tensor, tuple[Tensor, ...]]]:
    if state is None:
        state = tuple(half.initial_state(x))
    (y, *state), = yield [(stage, (x, *state))]
    return y, tuple(state)


def _stream(front_input: Callable[[Piece], Tensor], total: int, half: LayerStack,
            names: tuple[str, str, str], out_scale: int, settings: ChunkSettings,
            finish: Callable[[Tensor], Tensor]) -> Job:
    """front (pieces, all input available) -> recurrent layer (windows, state carried)
    -> back (lagged pieces); ``finish`` maps each emitted segment of the output. A half
    without a recurrent layer is all front: its pieces are the output."""
    front_name, lstm_name, back_name = names
    recurrent = half.split()[1] is not None
    scale = half.front_scale
    state, tail, tail_start, emitted, segments = None, None, 0, 0, []
    for w0 in range(0, total, settings.window):
        w1 = min(w0 + settings.window, total)
        pieces = split_pieces(w0, w1, (0, total), settings.piece, half.front_context)
        results = yield [(front_name, (front_input(p),)) for p in pieces]
        x = torch.cat([out[0][..., p.keep_start * scale : p.keep_end * scale]
                       for out, p in zip(results, pieces)], dim=-1)
        if not recurrent:
            segments.append(finish(x))
            continue
        y, state = yield from _recurrent(half, x, state, lstm_name)
        buffer = y if tail is None else torch.cat([tail, y], dim=-1)
        ready = total if w1 == total else max(emitted, w1 - half.back_context)
        if ready > emitted:
            out = yield from _lagged_stage(back_name, buffer, tail_start, emitted, ready,
                                           total, settings, half.back_context, out_scale)
            segments.append(finish(out))
            emitted = ready
        keep_from = max(0, emitted - half.back_context)
        tail = buffer[..., keep_from - tail_start :]
        tail_start = keep_from
    return torch.cat(segments, dim=-1)[0]


def _encode_job(codec: CodecModel, audio: Tensor, n_q: int | None,
                settings: ChunkSettings) -> Job:
    hop, length = codec.hop_length, audio.shape[-1]
    total = math.ceil(length / hop)

    def front_input(p: Piece) -> Tensor:
        stop = length if p.end == total else p.end * hop
        return audio[None, :, p.start * hop : stop]

    return _stream(front_input, total, codec.encoder, ("enc_front", "enc_lstm", "enc_back"),
                   1, settings, lambda latent: codec.quantizer.encode_latent(latent, n_q))


def _decode_job(codec: CodecModel, codes: Tensor, settings: ChunkSettings) -> Job:
    total = codes.shape[-1]

    def front_input(p: Piece) -> Tensor:
        return codec.quantizer.decode_codes(codes[None, :, p.start : p.end])

    return _stream(front_input, total, codec.decoder, ("dec_front", "dec_lstm", "dec_back"),
                   codec.hop_length, settings, lambda audio: audio)


def _recurrent_stage(half: LayerStack) -> Callable[..., tuple[Tensor, ...]]:
    def run(x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        y, state = half.recurrent_step(x, state)
        return (y, *state)
    return run


def _stages(codec: CodecModel) -> dict[str, Callable[..., tuple[Tensor, ...] | Tensor]]:
    enc, dec = codec.encoder, codec.decoder
    return {"enc_front": enc.front, "enc_lstm": _recurrent_stage(enc), "enc_back": enc.back,
            "dec_front": dec.front, "dec_lstm": _recurrent_stage(dec), "dec_back": dec.back}


def _run_group(fn: Callable[..., tuple[Tensor, ...] | Tensor], args: list[tuple[Tensor, ...]],
               max_batch: int) -> list[tuple[Tensor, ...]]:
    """Call ``fn`` on the items' arguments stacked along the batch, ``max_batch`` at a
    time; split the outputs back per item."""
    outputs: list[tuple[Tensor, ...]] = []
    for start in range(0, len(args), max_batch):
        chunk = args[start : start + max_batch]
        stacked = [torch.cat(parts, dim=0) for parts in zip(*chunk)]
        result = fn(*stacked)
        result = result if isinstance(result, tuple) else (result,)
        outputs += list(zip(*(r.split(1, dim=0) for r in result)))
    return outputs


def _activation_bytes(codec: CodecModel, stage: str, first: Tensor) -> int:
    """Bytes of the largest activation one item of ``stage`` makes: its frames at the
    stage's highest rate, times the channels of the audio-rate layers."""
    half, part = (codec.encoder if stage.startswith("enc") else codec.decoder,
                  stage.split("_")[1])
    if part == "lstm":
        return first[0].numel() * first.element_size()
    entry = half.samples_per_frame if part == "front" else half.front_scale
    frames = first.shape[-1] / entry
    filters = codec.config.network.wave_filters * first.element_size()
    return int(frames * half.peak_scale(part) * filters)


def run_jobs(jobs: Sequence[Job], codec: CodecModel, settings: ChunkSettings) -> list[Tensor]:
    """Drive the jobs together, batching the requests of equal stage and shape."""
    stages = _stages(codec)
    results: list[Tensor | None] = [None] * len(jobs)
    requests: dict[int, list[Item]] = {}

    def advance(index: int, answer: list[tuple[Tensor, ...]] | None) -> None:
        try:
            requests[index] = jobs[index].send(answer)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[index] = stop.value
            requests.pop(index, None)

    for index in range(len(jobs)):
        advance(index, None)
    while requests:
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for index, items in requests.items():
            for position, (stage, args) in enumerate(items):
                key = (stage, *(tuple(a.shape[1:]) for a in args))
                groups.setdefault(key, []).append((index, position))
        answers = {index: [None] * len(items) for index, items in requests.items()}
        for key, members in groups.items():
            args = [requests[i][p][1] for i, p in members]
            batch = settings.batch_for(_activation_bytes(codec, key[0], args[0][0]))
            for (i, p), out in zip(members, _run_group(stages[key[0]], args, batch)):
                answers[i][p] = out
        for index in list(requests):
            advance(index, answers[index])
    return results  # type: ignore[return-value]


def _check_settings(settings: ChunkSettings | None, codec: CodecModel) -> ChunkSettings:
    settings = settings or ChunkSettings()
    needed = max(codec.encoder.back_context, codec.decoder.back_context)
    if settings.window <= needed:
        raise ValueError(f"window must exceed {needed} frames (the back stages' context), "
                         f"got {settings.window}")
    return settings


@torch.inference_mode()
def encode_many(codec: CodecModel, audios: Sequence[Tensor], n_q: int | None = None,
                settings: ChunkSettings | None = None) -> list[Tensor]:
    """Codes [K, T_i] for each audio [C, L_i] (any lengths), equal to
    ``codec.encode(audio[None])[0]`` up to float rounding, in bounded memory. Each input
    is checked once, here (not piece by piece)."""
    settings = _check_settings(settings, codec)
    n_q = codec.quantizer.resolve_n_q(n_q)
    for audio in audios:
        codec.check_audio(audio[None] if isinstance(audio, Tensor) else audio, finite=True)
    jobs = [_encode_job(codec, audio, n_q, settings) for audio in audios]
    return run_jobs(jobs, codec, settings)


@torch.inference_mode()
def decode_many(codec: CodecModel, codes: Sequence[Tensor], lengths: Sequence[int | None] = (),
                settings: ChunkSettings | None = None) -> list[Tensor]:
    """Audio [C, L_i] for each codes [K', T_i] (trimmed to ``lengths[i]`` when given),
    equal to ``codec.decode(codes[None])[0]`` up to float rounding. Each codes tensor is
    checked and converted to int64 once, here (not piece by piece)."""
    settings = _check_settings(settings, codec)
    lengths = list(lengths) or [None] * len(codes)
    if len(lengths) != len(codes):
        raise ValueError(f"got {len(lengths)} lengths for {len(codes)} code tensors")
    checked = [codec.check_codes(code[None] if isinstance(code, Tensor) else code, length)[0]
               for code, length in zip(codes, lengths)]
    jobs = [_decode_job(codec, code, settings) for code in checked]
    audios = run_jobs(jobs, codec, settings)
    return [a if n is None else a[..., :n] for a, n in zip(audios, lengths)]
