"""A new layer kind needs one file: this one. ``CausalAverage`` is defined here, with
what each runtime asks of a layer (``mmdtok.models.runtime.layer``), put into both
halves of a small causal codec, and run whole, chunked, streamed and exported to ONNX
by the runners as they are."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmdtok.export import DECODER, ENCODER, export_onnx
from mmdtok.models import ChunkSettings, CodecConfig, SEANetConfig, decode_many, encode_many
from mmdtok.models.runtime.layer import Layer, Streamer, WeightCache, nothing
from mmdtok.persistence import Codec
from mmdtok.streaming import StreamingDecoder, StreamingEncoder
from mmdtok.testing import notes

SR = 16_000


class CausalAverage(Layer):
    """y[t] = x[t] + gain * (the mean of x[t - k + 1 .. t]), per channel, zeros before the
    start: a causal smoother with a learned gain per channel."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.gain = nn.Parameter(torch.linspace(-0.5, 0.5, channels))

    def _taps(self, channels: int, like: Tensor) -> Tensor:
        return like.new_full((channels, 1, self.k), 1.0 / self.k)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, L], the whole pass and training
        channels = x.shape[1]
        mean = F.conv1d(F.pad(x, (self.k - 1, 0)), self._taps(channels, x), groups=channels)
        return x + self.gain.view(1, -1, 1) * mean

    # chunking: the output depends on k - 1 steps back, at this layer's rate
    def reach(self, scale: float) -> tuple[float, float]:
        return (self.k - 1) / scale, scale

    # streaming: it looks only back, and keeps its last k - 1 input rows
    @property
    def causal(self) -> bool:
        return True

    def streamer(self) -> Streamer:
        return _AverageStreamer(self)

    # the CPU plan: time-major rows [B, L, C], a running sum over the padded rows
    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        return self.rows(x, x.new_zeros(x.shape[0], self.k - 1, x.shape[2])), 0

    def rows(self, x: Tensor, history: Tensor) -> Tensor:
        """The layer on time-major x [B, n, C] after ``history`` [B, k - 1, C]."""
        padded = torch.cat([history, x], 1)
        mean = padded.unfold(1, self.k, 1).mean(-1)  # [B, n, C]
        return x + self.gain.detach() * mean


class _AverageStreamer(Streamer):
    def __init__(self, layer: CausalAverage) -> None:
        super().__init__(layer)
        self.history: Tensor | None = None

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return nothing()
        if self.history is None:
            self.history = x.new_zeros(x.shape[0], self.layer.k - 1, x.shape[2])
        out = self.layer.rows(x, self.history)
        self.history = torch.cat([self.history, x], 1)[:, x.shape[1]:]
        return out


class AveragedCodec(Codec):
    """A tiny causal SEANet codec with a CausalAverage in each half."""

    def __init__(self, encoder, quantizer, decoder, config) -> None:
        super().__init__(encoder, quantizer, decoder, config)
        filters = config.seanet.n_filters
        encoder.layers.insert(1, CausalAverage(filters, 5))
        decoder.layers.insert(len(decoder.layers) - 2, CausalAverage(filters, 3))


@pytest.fixture(scope="module")
def codec() -> AveragedCodec:
    config = CodecConfig(name="tiny-averaged", sample_rate=SR, seanet=SEANetConfig(
        dimension=16, n_filters=4, ratios=(4, 2, 2), lstm_layers=1, causal=True,
        pad_mode="constant"), quantizer={"kind": "rvq", "num_codebooks": 3,
                                         "codebook_size": 32})
    torch.manual_seed(0)
    model = AveragedCodec.from_config(config).double()
    model.train()
    batch = torch.stack([notes(1.0, SR, seed=s) for s in range(8)]).double()
    with torch.no_grad():  # codebooks by k-means on the codec's own latents
        model.quantizer(model.encoder(batch))
    return model.for_inference()


def test_the_layer_is_in_both_halves_and_changes_them(codec):
    assert sum(isinstance(m, CausalAverage) for m in codec.modules()) == 2
    audio = notes(0.2, SR, seed=1)[None].double()
    with torch.no_grad():
        before = codec.encoder(audio)
        layer = next(m for m in codec.encoder.modules() if isinstance(m, CausalAverage))
        gain = layer.gain.clone()
        layer.gain.zero_()
        assert not torch.allclose(codec.encoder(audio), before)
        layer.gain.copy_(gain)


def test_the_cpu_plan_and_the_whole_pass_agree(codec):
    audio = notes(0.3, SR, seed=2)[None].double()
    with torch.no_grad():
        planned = codec.encoder(audio)  # eval, no gradients, CPU: the time-major plan
    plain = codec.encoder(audio.requires_grad_())  # with gradients: the modules' forward
    torch.testing.assert_close(planned, plain.detach(), atol=1e-12, rtol=0)


def test_chunked_encoding_and_decoding_equal_the_whole_pass(codec):
    audio = notes(3.0, SR, seed=3).double()
    settings = ChunkSettings(window=60, piece=13, max_batch=3)
    whole = codec.encode(audio[None])[0]
    assert torch.equal(encode_many(codec, [audio], settings=settings)[0], whole)
    decoded = decode_many(codec, [whole], [audio.shape[-1]], settings=settings)[0]
    torch.testing.assert_close(decoded, codec.decode(whole[None])[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("pieces", [[320], [1, 7, 250, 0, 33]])
def test_streaming_equals_the_whole_pass(codec, pieces):
    audio = notes(0.5, SR, seed=4)[None].double()
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    assert encoder.startup == codec.hop_length  # causal, zero padding: one frame
    codes, pos, i = [], 0, 0
    while pos < audio.shape[-1]:
        codes.append(encoder.push(audio[..., pos : pos + pieces[i % len(pieces)]]))
        pos, i = pos + pieces[i % len(pieces)], i + 1
    streamed = torch.cat([*codes, encoder.flush()], -1)
    assert torch.equal(streamed, codec.encode(audio))
    out = [decoder.push(streamed[..., t : t + 2]) for t in range(0, streamed.shape[-1], 2)]
    torch.testing.assert_close(torch.cat([*out, decoder.flush()], -1), codec.decode(streamed),
                               atol=1e-10, rtol=0)


def test_the_codec_exports_to_onnx_with_its_codes(codec, tmp_path):
    import onnxruntime

    codec = copy.deepcopy(codec).float()
    result = export_onnx(codec, tmp_path, check=True)
    assert result.check is not None and result.check.codes_equal == 1.0
    audio = notes(1.0, SR, seed=5)[None]

    def run(name: str, value: np.ndarray) -> np.ndarray:
        session = onnxruntime.InferenceSession(tmp_path / name,
                                               providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: value})[0]

    codes = codec.encode(audio)
    assert np.array_equal(run(ENCODER, audio.numpy()), codes.numpy())
    assert np.abs(run(DECODER, codes.numpy()) - codec.decode(codes).numpy()).max() < 1e-4
