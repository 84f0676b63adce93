"""ONNX export of a codec (the runner lives in :mod:`mmdtok.models.runtime.export`; this
is its public name)."""

from mmdtok.models.runtime.export import (
    DECODER,
    ENCODER,
    FORMAT,
    METADATA,
    OnnxCheck,
    OnnxExport,
    export_onnx,
)

__all__ = ["DECODER", "ENCODER", "FORMAT", "METADATA", "OnnxCheck", "OnnxExport",
           "export_onnx"]
