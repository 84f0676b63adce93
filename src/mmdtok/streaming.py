"""Real-time streaming for causal codecs: audio in pieces of any size -> codes as soon as
they are determined, and codes in pieces -> audio.

    encoder = StreamingEncoder(codec)
    for piece in microphone():               # [B, C, n], any n >= 0
        send(encoder.push(piece))            # codes [B, K, t], t >= 0
    send(encoder.flush())                    # the last codes, once the input has ended

    decoder = StreamingDecoder(codec)
    for codes in receive():                  # [B, K, t]
        play(decoder.push(codes))            # audio [B, C, t * hop] (after the start-up)
    play(decoder.flush())

The laws (tested over random piece sizes): the codes streamed out equal ``codec.encode``
of the whole input, and the audio streamed out equals ``codec.decode`` of the whole code
sequence, up to float rounding.

Every layer keeps what the next outputs need: a convolution the last ``kernel - stride``
samples of its input, a transposed convolution the overlapping tail of its output, the
LSTM its state. A causal convolution pads only on the left, so output frame ``t`` needs
input up to frame ``t``: a code comes out as soon as the hop of audio it covers is in,
and a code's audio as soon as the code is. The exception is the start: a convolution
that pads by reflection (EnCodec's layers do) reflects its first samples, so its first
output waits until ``kernel - stride + 1`` samples are in. :attr:`StreamingEncoder.startup`
and :attr:`StreamingDecoder.startup` measure that wait. At the end, :meth:`flush` pads
the tail as the whole pass does (the right padding of a strided convolution).

Only causal codecs stream: a centred convolution looks ahead by half its kernel at
every layer, so its output for a frame depends on audio that has not arrived yet. Such
a codec is refused, with that reason. (:mod:`mmdtok.models.chunked` is a different
thing: exact chunked processing of a whole file, for any codec.)

A stream holds a copy of the codec (weight norm folded) made when it is built: train
the codec further and build new streams to follow it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.models.codec import CodecModel
from mmdtok.models.layers import (
    Conv1d,
    ConvTranspose1d,
    ResidualUnit,
    SkipLSTM,
    Snake,
    pad1d,
)
from mmdtok.models.seanet import _ThreeStages


def _nothing() -> Tensor:
    return torch.empty(0)


class _Stream:
    """One layer in streaming form: ``push`` takes [B, C, n] and returns what is
    determined, ``flush`` the rest once the input has ended. Nothing is ``torch.empty(0)``
    both ways. ``count(n)``: outputs emitted in all after n inputs (before the flush)."""

    def push(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def flush(self) -> Tensor:
        return _nothing()

    def count(self, n: int) -> int:
        return n


class _Pointwise(_Stream):
    def __init__(self, fn: nn.Module) -> None:
        self.fn = fn

    def push(self, x: Tensor) -> Tensor:
        return self.fn(x) if x.numel() else _nothing()


def _weights(conv: nn.Module) -> tuple[Tensor, Tensor | None]:
    bias = conv.bias.detach().clone() if conv.bias is not None else None
    return conv.weight.detach().clone(), bias


class _Conv(_Stream):
    """A causal :class:`~mmdtok.models.layers.Conv1d`: left padding ``kernel - stride``
    (reflected, replicated or zeros, as the layer pads), then every window that fits."""

    def __init__(self, layer: Conv1d) -> None:
        self.weight, self.bias = _weights(layer.conv)
        self.stride, self.kernel = layer.stride, layer.kernel
        self.dilation = layer.conv.dilation[0]
        self.left = self.kernel - self.stride
        self.mode = layer.pad_mode
        self.need = self.left + 1 if self.mode == "reflect" else 1  # samples to start
        self.buf: Tensor | None = None  # padded input not yet consumed
        self.raw: list[Tensor] = []  # input before the start
        self.length = 0  # input samples seen
        self.emitted = 0  # output frames emitted

    def count(self, n: int) -> int:
        return n // self.stride if n >= self.need else 0

    def _run(self, frames: int) -> Tensor:
        if frames <= 0:
            return _nothing()
        assert self.buf is not None
        span = (frames - 1) * self.stride + self.kernel
        out = F.conv1d(self.buf[..., :span], self.weight, self.bias, self.stride,
                       dilation=self.dilation)
        self.buf = self.buf[..., frames * self.stride :]
        self.emitted += frames
        return out

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return _nothing()
        self.length += x.shape[-1]
        if self.buf is None:
            self.raw.append(x)
            if self.length < self.need:
                return _nothing()
            raw = torch.cat(self.raw, -1)
            self.raw = []
            self.buf = pad1d(raw, self.left, 0, self.mode)
        else:
            self.buf = torch.cat([self.buf, x], -1)
        return self._run((self.buf.shape[-1] - self.kernel) // self.stride + 1)

    def flush(self) -> Tensor:
        total = math.ceil(self.length / self.stride)
        extra = total * self.stride - self.length
        if self.buf is None:  # shorter than the padding: padded at once, as the whole pass
            if not self.length:
                return _nothing()
            self.buf = pad1d(torch.cat(self.raw, -1), self.left, extra, self.mode)
        else:
            self.buf = pad1d(self.buf, 0, extra, self.mode)
        return self._run(total - self.emitted)


class _ConvTranspose(_Stream):
    """A causal :class:`~mmdtok.models.layers.ConvTranspose1d`: overlap-add, the output
    samples no later frame reaches are emitted; the layer's trims applied to the total."""

    def __init__(self, layer: ConvTranspose1d) -> None:
        self.weight, self.bias = _weights(layer.conv)
        self.stride = layer.stride
        self.trim_start, self.right = layer.trim  # samples trimmed at the start, the end
        self.skip = self.trim_start
        self.tail: Tensor | None = None  # the partial sums of the last kernel - stride

    def count(self, n: int) -> int:
        return max(0, n * self.stride - self.trim_start)

    def _finish(self, y: Tensor) -> Tensor:
        if self.bias is not None:
            y = y + self.bias[:, None]
        if self.skip:
            cut = min(self.skip, y.shape[-1])
            self.skip -= cut
            y = y[..., cut:]
        return y if y.shape[-1] else _nothing()

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return _nothing()
        y = F.conv_transpose1d(x, self.weight, None, self.stride)
        if self.tail is not None:
            overlap = self.tail.shape[-1]
            y = torch.cat([y[..., :overlap] + self.tail, y[..., overlap:]], -1)
        done = x.shape[-1] * self.stride
        self.tail = y[..., done:]
        return self._finish(y[..., :done])

    def flush(self) -> Tensor:
        if self.tail is None:
            return _nothing()
        return self._finish(self.tail[..., : self.tail.shape[-1] - self.right])


def _cat(parts: list[Tensor]) -> Tensor:
    parts = [t for t in parts if t.numel()]
    return torch.cat(parts, -1) if parts else _nothing()


class _Sequence(_Stream):
    def __init__(self, streams: list[_Stream]) -> None:
        self.streams = streams

    def count(self, n: int) -> int:
        for stream in self.streams:
            n = stream.count(n)
        return n

    def push(self, x: Tensor) -> Tensor:
        for stream in self.streams:
            x = stream.push(x)
        return x

    def flush(self) -> Tensor:
        x = _nothing()
        for stream in self.streams:
            x = _cat([stream.push(x), stream.flush()])
        return x


class _Residual(_Stream):
    """``shortcut(x) + block(x)``: the block's output lags at the start (its padded
    convolutions wait for their first samples), so both branches queue until aligned."""

    def __init__(self, unit: ResidualUnit) -> None:
        self.block = _Sequence([_stream(layer) for layer in unit.block])
        self.shortcut = _stream(unit.shortcut)
        self.pending = [_nothing(), _nothing()]

    def count(self, n: int) -> int:
        return min(self.shortcut.count(n), self.block.count(n))

    def _emit(self, short: Tensor, long: Tensor) -> Tensor:
        self.pending = [_cat([self.pending[0], short]), _cat([self.pending[1], long])]
        a, b = self.pending
        n = min(a.shape[-1] if a.numel() else 0, b.shape[-1] if b.numel() else 0)
        if not n:
            return _nothing()
        self.pending = [a[..., n:], b[..., n:]]
        return a[..., :n] + b[..., :n]

    def push(self, x: Tensor) -> Tensor:
        return self._emit(self.shortcut.push(x), self.block.push(x))

    def flush(self) -> Tensor:
        return self._emit(self.shortcut.flush(), self.block.flush())


class _LSTM(_Stream):
    def __init__(self, layer: SkipLSTM) -> None:
        self.layer = layer
        self.state: tuple[Tensor, Tensor] | None = None

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return _nothing()
        y, self.state = self.layer.step(x, self.state)
        return y


def _stream(layer: nn.Module) -> _Stream:
    if isinstance(layer, Conv1d):
        return _Conv(layer)
    if isinstance(layer, ConvTranspose1d):
        return _ConvTranspose(layer)
    if isinstance(layer, ResidualUnit):
        return _Residual(layer)
    if isinstance(layer, SkipLSTM):
        return _LSTM(layer)
    if isinstance(layer, nn.Identity | nn.ELU | Snake):
        return _Pointwise(layer)
    raise TypeError(f"no streaming form for the layer {type(layer).__name__}")


def _stages(half: _ThreeStages) -> _Sequence:
    return _Sequence([_stream(layer) for layer in half.layers])


def check_streamable(codec: CodecModel) -> None:
    """ValueError with the reason when ``codec`` cannot stream (a non-causal codec)."""
    if not codec.config.causal:
        raise ValueError(
            f"the codec {codec.config.name!r} is not causal: its centred convolutions look "
            f"ahead at every layer, so a frame's code depends on audio that has not arrived "
            f"yet and cannot be streamed exactly; use a causal codec (e.g. the "
            f"encodec-24khz layout), or mmdtok.models.encode_many for whole files")


class _Half:
    def __init__(self, codec: CodecModel, half: str) -> None:
        check_streamable(codec)
        # a frozen copy: training the codec further does not change a stream
        self.codec = codec.folded_copy().requires_grad_(False)
        self.dtype = next(self.codec.parameters()).dtype
        self.layers = _stages(getattr(self.codec, half))
        self.ended = False
        self._batch: int | None = None

    def _check_open(self) -> None:
        if self.ended:
            raise RuntimeError("the stream has been flushed; build a new one for new input")

    def _first(self) -> int:
        """The fewest inputs after which the layers have emitted an output."""
        hi = 1
        while not self.layers.count(hi):
            hi *= 2
        lo = hi // 2  # count(lo) == 0 (or lo == 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.layers.count(mid) else (mid, hi)
        return hi


class StreamingEncoder(_Half):
    """Audio [B, C, n] in pieces of any size -> codes [B, K, t] as soon as they are
    determined (a continuous codec: latents [B, D, t]); ``n_q`` keeps a prefix of the
    codebooks.

    After :attr:`startup` samples, the codes of frame ``t`` come out as soon as sample
    ``(t + 1) * hop - 1`` is in: no look-ahead, one frame of latency.
    """

    def __init__(self, codec: CodecModel, n_q: int | None = None) -> None:
        super().__init__(codec, "encoder")
        self.n_q = codec.quantizer.resolve_n_q(n_q)
        self.samples = 0

    @property
    def startup(self) -> int:
        """Input samples that must be in before the first code comes out: one hop, plus
        what the reflected paddings of the layers wait for at the start."""
        return self._first()

    def emitted(self, samples: int) -> int:
        """Frames of codes out, in all, once ``samples`` samples are in (before the
        flush): 0 before :attr:`startup`, ``samples // hop`` from there on."""
        return self.layers.count(samples)

    def _codes(self, latent: Tensor) -> Tensor:
        if not latent.numel():
            k = self.codec.latent_dim if self.codec.continuous else self.n_q
            dtype = self.dtype if self.codec.continuous else torch.long
            return torch.zeros(self._batch or 1, k, 0, dtype=dtype)
        with torch.inference_mode():
            return self.codec.quantizer.encode_latent(latent, self.n_q)

    @torch.no_grad()
    def push(self, audio: Tensor) -> Tensor:
        """Codes [B, K, t] (t >= 0) newly determined by ``audio`` [B, C, n]."""
        self._check_open()
        if not isinstance(audio, Tensor) or audio.dim() != 3 or (
                audio.shape[1] != self.codec.channels) or not audio.is_floating_point():
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise ValueError(f"audio must be a float tensor [B, {self.codec.channels}, n], "
                             f"got {shape}")
        if self._batch is not None and audio.shape[0] != self._batch:
            raise ValueError(f"the batch changed from {self._batch} to {audio.shape[0]}: "
                             f"keep it fixed in a stream")
        if audio.shape[-1] and not bool(torch.isfinite(audio).all()):
            raise ValueError("the audio contains NaN or infinite samples")
        self._batch = audio.shape[0]
        self.samples += audio.shape[-1]
        return self._codes(self.layers.push(audio.to(self.dtype)))

    @torch.no_grad()
    def flush(self) -> Tensor:
        """The last codes once the input has ended (its end padded as the whole pass
        pads it). The stream is then closed."""
        self._check_open()
        if not self.samples:
            raise ValueError("nothing was pushed: no audio to encode")
        self.ended = True
        return self._codes(self.layers.flush())


class StreamingDecoder(_Half):
    """Codes [B, K', t] in pieces (K' <= K codebooks, the same each time; a continuous
    codec: latents [B, D, t]) -> audio [B, C, n] as soon as it is determined.

    After :attr:`startup` frames, each frame's ``hop`` samples come out as soon as its
    codes are in.
    """

    def __init__(self, codec: CodecModel) -> None:
        super().__init__(codec, "decoder")
        self.frames = 0
        self._codebooks: int | None = None

    @property
    def startup(self) -> int:
        """Frames that must be in before the first audio comes out: one, plus what the
        reflected paddings of the layers wait for at the start."""
        return self._first()

    def emitted(self, frames: int) -> int:
        """Samples out, in all, once ``frames`` frames are in (before the flush)."""
        return self.layers.count(frames)

    def _audio(self, out: Tensor) -> Tensor:
        return out if out.numel() else torch.zeros(self._batch or 1, self.codec.channels, 0)

    @torch.no_grad()
    def push(self, codes: Tensor) -> Tensor:
        """Audio [B, C, n] (n >= 0) newly determined by ``codes`` [B, K', t]."""
        self._check_open()
        if not isinstance(codes, Tensor) or codes.dim() != 3:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a tensor [B, K, t], got {shape}")
        if self._batch is not None and (codes.shape[0], codes.shape[1]) != (
                self._batch, self._codebooks):
            raise ValueError(f"codes [{codes.shape[0]}, {codes.shape[1]}, t] after "
                             f"[{self._batch}, {self._codebooks}, t]: keep the batch and "
                             f"the codebooks fixed in a stream")
        self._batch, self._codebooks = codes.shape[0], codes.shape[1]
        if not codes.shape[-1]:
            return self._audio(_nothing())
        with torch.inference_mode():
            latent = self.codec.quantizer.decode(codes)
        self.frames += codes.shape[-1]
        return self._audio(self.layers.push(latent.clone()))

    @torch.no_grad()
    def flush(self) -> Tensor:
        """The last audio once the codes have ended; the stream is then closed."""
        self._check_open()
        if not self.frames:
            raise ValueError("nothing was pushed: no codes to decode")
        self.ended = True
        return self._audio(self.layers.flush())


__all__ = ["StreamingDecoder", "StreamingEncoder", "check_streamable"]
