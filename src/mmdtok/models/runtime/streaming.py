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

The runner knows no layer: each layer of a half gives its own streaming state and step
(:meth:`Layer.streamer <mmdtok.models.runtime.layer.Layer.streamer>`), on time-major
rows: a convolution keeps the last ``kernel - stride`` samples of its input, a
transposed convolution the overlapping tail of its output, the LSTM its state. A causal
convolution pads only on the left, so output frame ``t`` needs input up to frame ``t``:
a code comes out as soon as the hop of audio it covers is in, and a code's audio as soon
as the code is. The exception is the start: a convolution that pads by reflection
(EnCodec's layers do) reflects its first samples, so its first output waits until
``kernel - stride + 1`` samples are in (zero padding, as in
``mmdtok:small-music-causal``, starts at once: one frame). :attr:`StreamingEncoder.startup` and
:attr:`StreamingDecoder.startup` measure that wait. At the end, :meth:`flush` pads the
tail as the whole pass does (the right padding of a strided convolution).

Only causal codecs stream: a centred convolution looks ahead by half its kernel at
every layer, so its output for a frame depends on audio that has not arrived yet. Such
a codec is refused, with that reason. (:mod:`mmdtok.models.runtime.chunked` is a different
thing: exact chunked processing of a whole file, for any codec.)

A stream holds a copy of the codec (weight norm folded) made when it is built: train
the codec further and build new streams to follow it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdtok.models.codec import CodecModel
from mmdtok.models.runtime.layer import NotStreamable, Streamer, nothing


class _StackStreamer:
    """A half's streamer on channels-first tensors: time-major rows inside."""

    def __init__(self, streamer: Streamer) -> None:
        self.streamer = streamer

    def count(self, n: int) -> int:
        return self.streamer.count(n)

    def push(self, x: Tensor) -> Tensor:
        out = self.streamer.push(x.transpose(1, 2))
        return out.transpose(1, 2) if out.numel() else out

    def flush(self) -> Tensor:
        out = self.streamer.flush()
        return out.transpose(1, 2) if out.numel() else out


def check_streamable(codec: CodecModel) -> None:
    """ValueError with the reason when ``codec`` cannot stream (a non-causal codec)."""
    if codec.encoder.causal and not codec.decoder.causal:
        try:  # the reason of the layer that looks ahead
            codec.decoder.streamer()
            reason = "it looks ahead"
        except NotStreamable as error:
            reason = str(error)
        raise NotStreamable(f"the codec {codec.config.name!r} has a causal encoder but its "
                            f"decoder cannot stream ({reason}); decode whole files, or "
                            f"in exact chunks with mmdtok.models.decode_many")
    if not (codec.encoder.causal and codec.decoder.causal):
        raise NotStreamable(
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
        self.layers = _StackStreamer(getattr(self.codec, half).streamer())
        self.ended = False
        self._batch: int | None = None

    def _check_open(self) -> None:
        if self.ended:
            raise RuntimeError("the stream has been flushed; build a new one for new input")

    def _check_batch(self, batch: int) -> None:
        if batch == 0:
            raise ValueError("a batch of 0: give at least one item")
        if self._batch is not None and batch != self._batch:
            raise ValueError(f"the batch changed from {self._batch} to {batch}: keep it "
                             f"fixed in a stream")

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
        n_q = codec.quantizer.resolve_n_q(n_q)  # refused before any work
        super().__init__(codec, "encoder")
        self.n_q = n_q
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
        self._check_batch(audio.shape[0])
        if audio.shape[-1] and not bool(torch.isfinite(audio).all()):
            raise ValueError("the audio contains NaN or infinite samples")
        self._batch = audio.shape[0]  # every check passed: a refused push changes nothing
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
        codes = self.codec.quantizer.checked_codes(codes)  # type, rank, dtype, range
        self._check_batch(codes.shape[0])
        if self._codebooks is not None and codes.shape[1] != self._codebooks:
            raise ValueError(f"codes of {codes.shape[1]} codebooks after {self._codebooks}: "
                             f"keep the codebooks fixed in a stream")
        # every check passed: a refused push changes nothing
        self._batch, self._codebooks = codes.shape[0], codes.shape[1]
        if not codes.shape[-1]:
            return self._audio(nothing())
        with torch.inference_mode():
            latent = self.codec.quantizer.decode_codes(codes)
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
