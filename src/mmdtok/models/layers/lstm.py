"""SEANet's LSTM with a skip connection, for every runtime: the one recurrent layer.

Chunked encoding runs it over consecutive windows with its state carried (``step``);
a stream keeps its state between pieces. For ONNX export each LSTM layer becomes one
custom operator (``mmdtok::lstm_layer``) that an onnxscript translation turns into
ONNX's own ``LSTM`` node: the graph holds no loop over the frames, so the number of
frames stays one symbolic size and the export takes seconds. (torch.onnx's own path
for ``nn.LSTM`` with a dynamic length traces a while loop over the frames, whose sizes
its symbolic shape simplification takes minutes over for a 1024-wide network.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmdtok.models.runtime.layer import Layer, Streamer, WeightCache, nothing

LSTMState = tuple[Tensor, Tensor]


class SkipLSTM(Layer):
    """A unidirectional LSTM over the frames of [B, D, T] plus the input (skip).

    ``step(x, state)`` carries the recurrent state across consecutive pieces of a long
    sequence: the outputs equal those of one call on the whole sequence. The state is
    batch-first: (h, c), each [B, layers, D].
    """

    recurrent = True

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def reach(self, scale: float) -> tuple[float, float]:
        return 0.0, scale  # only looks back; the chunked runner carries its state

    @property
    def causal(self) -> bool:
        return True

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x, None)[0]

    def initial_state(self, x: Tensor) -> LSTMState:
        """The zero state for a piece x [B, D, T] (batch-first, as ``step``)."""
        zeros = x.new_zeros(x.shape[0], self.lstm.num_layers, self.lstm.hidden_size)
        return zeros, zeros

    def step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        seq = x.permute(2, 0, 1)  # [T, B, D]
        if state is not None:
            state = (state[0].transpose(0, 1).contiguous(),
                     state[1].transpose(0, 1).contiguous())
        y, (h, c) = self.lstm(seq, state)
        return (y + seq).permute(1, 2, 0), (h.transpose(0, 1), c.transpose(0, 1))

    def time_major(self, x: Tensor, plan: WeightCache | None, following: Sequence[Layer],
                   owned: bool = False) -> tuple[Tensor, int]:
        seq = x.transpose(0, 1)  # [T, B, D]
        y, _ = self.lstm(seq)
        return y.add_(seq).transpose(0, 1), 0

    def streamer(self) -> Streamer:
        return _LSTMStreamer(self)

    def prepare_export(self) -> None:
        if not isinstance(self.lstm, _ExportedLSTM):
            self.lstm = _ExportedLSTM(self.lstm)

    def onnx_translations(self) -> dict[Any, Callable[..., Any]]:
        return {_lstm_layer_op().default: _onnx_lstm_layer}


class _LSTMStreamer(Streamer):
    """The state kept between pieces, and a step of its own: oneDNN's LSTM kernel
    rearranges its weights at every call, which costs milliseconds for the one or two
    frames of a 20 ms piece. Here the weights are laid out once (gates reordered to
    (i, f, o, g), so that one sigmoid covers three of them): per layer, one product
    projects the piece's frames, then one matrix-vector product per frame."""

    def __init__(self, layer: SkipLSTM) -> None:
        super().__init__(layer)
        lstm = layer.lstm
        hidden = lstm.hidden_size
        order = torch.cat([torch.arange(0, 2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                           torch.arange(2 * hidden, 3 * hidden)])
        self.layers = []
        for k in range(lstm.num_layers):
            w_ih = getattr(lstm, f"weight_ih_l{k}").detach()[order]
            w_hh = getattr(lstm, f"weight_hh_l{k}").detach()[order]
            bias = (getattr(lstm, f"bias_ih_l{k}").detach()
                    + getattr(lstm, f"bias_hh_l{k}").detach())[order]
            self.layers.append((w_ih.t().contiguous(), w_hh.t().contiguous(), bias))
        self.hidden = hidden
        self.state: list[LSTMState] | None = None

    def push(self, x: Tensor) -> Tensor:
        if not x.numel():
            return nothing()
        batch, frames, _ = x.shape
        hidden = self.hidden
        if self.state is None:
            zeros = x.new_zeros(batch, hidden)
            self.state = [(zeros, zeros)] * len(self.layers)
        seq = x
        for k, (w_ih, w_hh, bias) in enumerate(self.layers):
            gates = torch.addmm(bias, seq.reshape(-1, seq.shape[-1]), w_ih)
            gates = gates.view(batch, frames, 4 * hidden)
            h, c = self.state[k]
            out = x.new_empty(batch, frames, hidden)
            for t in range(frames):
                g = torch.addmm(gates[:, t], h, w_hh)
                sig = torch.sigmoid(g[:, : 3 * hidden])
                cell = torch.tanh(g[:, 3 * hidden :])
                c = torch.addcmul(sig[:, hidden : 2 * hidden] * c, sig[:, :hidden], cell)
                h = sig[:, 2 * hidden :] * torch.tanh(c)
                out[:, t] = h
            self.state[k] = (h, c)
            seq = out
        return seq.add_(x)


@functools.cache
def _lstm_layer_op() -> Any:
    """The custom operator ``mmdtok::lstm_layer``, defined on first use (an export)."""

    @torch.library.custom_op("mmdtok::lstm_layer", mutates_args=())
    def lstm_layer(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                   b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One LSTM layer from zeros, time-major: x [T, B, I] -> (y [T, B, H], h [1, B, H],
        c [1, B, H]), torch's gate order (i, f, g, o)."""
        zeros = x.new_zeros(1, x.shape[1], w_hh.shape[1])
        y, h, c = torch.lstm(x, (zeros, zeros), [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0,
                             False, False, False)
        return y, h, c

    @lstm_layer.register_fake
    def _(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
          b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = w_hh.shape[1]
        return (x.new_empty(x.shape[0], x.shape[1], hidden),
                x.new_empty(1, x.shape[1], hidden), x.new_empty(1, x.shape[1], hidden))

    return torch.ops.mmdtok.lstm_layer


def _onnx_lstm_layer(x, w_ih, w_hh, b_ih, b_hh):
    """``mmdtok::lstm_layer`` as ONNX ops (an onnxscript translation for torch.onnx): the
    gates reordered from torch's (i, f, g, o) to ONNX's (i, o, f, c), with a direction
    axis; constant folding turns the reordering into reordered weights."""
    from onnxscript import opset18 as op

    hidden = w_hh.shape[1]

    def gates(w):
        i, f, g, o = (op.Slice(w, [k * hidden], [(k + 1) * hidden], [0]) for k in range(4))
        return op.Concat(i, o, f, g, axis=0)

    y, h, c = op.LSTM(x, op.Unsqueeze(gates(w_ih), [0]), op.Unsqueeze(gates(w_hh), [0]),
                      op.Unsqueeze(op.Concat(gates(b_ih), gates(b_hh), axis=0), [0]),
                      hidden_size=hidden)
    return op.Squeeze(y, [1]), h, c  # y: [T, directions = 1, B, H]


class _ExportedLSTM(nn.Module):
    """An ``nn.LSTM`` (unidirectional, time-major, with biases) as ``mmdtok::lstm_layer``
    calls, one a layer, on the same weights: the same function in eval mode."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        if lstm.bidirectional or lstm.batch_first or lstm.proj_size or not lstm.bias:
            raise ValueError("only unidirectional, time-major LSTMs with biases are exported")
        self.lstm = lstm

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The output sequence of the last layer (as ``nn.LSTM``'s) and the final state of
        every layer, [layers, B, H] each."""
        if state is not None:
            raise ValueError("the exported LSTM starts from zeros")
        op, finals = _lstm_layer_op(), []
        for k in range(self.lstm.num_layers):
            x, h, c = op(x, *(getattr(self.lstm, f"{name}_l{k}") for name in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
            finals.append((h, c))
        return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))


__all__ = ["LSTMState", "SkipLSTM"]
