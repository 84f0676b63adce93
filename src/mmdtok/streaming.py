"""Real-time streaming for causal codecs (the runner lives in
:mod:`mmdtok.models.runtime.streaming`; this is its public name)."""

from mmdtok.models.runtime.layer import NotStreamable
from mmdtok.models.runtime.streaming import StreamingDecoder, StreamingEncoder, check_streamable

__all__ = ["NotStreamable", "StreamingDecoder", "StreamingEncoder", "check_streamable"]
