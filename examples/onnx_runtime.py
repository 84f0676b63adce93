"""Encode and decode a file with an exported codec in onnxruntime: no torch, no mmdtok.

    mmdtok export-onnx -o onnx/small-music            # once, where mmdtok is installed
    python examples/onnx_runtime.py onnx/small-music song.wav decoded.wav

Needs onnxruntime, numpy and soundfile. The file must be at the codec's sample rate (see
onnx.json; resample it first otherwise); channels are mixed or repeated to the codec's.
Prints the codes' shape and writes the decoded audio (16-bit PCM).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import soundfile


def main(folder: str, source: str, target: str) -> None:
    meta = json.loads((Path(folder) / "onnx.json").read_text())
    audio, rate = soundfile.read(source, dtype="float32", always_2d=True)  # [L, C]
    if rate != meta["sample_rate"]:
        sys.exit(f"{source} is at {rate} Hz; this codec reads {meta['sample_rate']} Hz")
    if audio.shape[1] != meta["channels"]:  # mix down, or repeat a mono file
        audio = np.repeat(audio.mean(axis=1, keepdims=True), meta["channels"], axis=1)
    if audio.shape[0] < meta["min_samples"]:
        sys.exit(f"{source} is shorter than the {meta['min_samples']} samples the graph "
                 f"needs")
    options = {"providers": ["CPUExecutionProvider"]}
    encoder = onnxruntime.InferenceSession(str(Path(folder) / "encoder.onnx"), **options)
    decoder = onnxruntime.InferenceSession(str(Path(folder) / "decoder.onnx"), **options)
    batch = np.ascontiguousarray(audio.T[None])  # [1, C, L]
    codes = encoder.run(None, {"audio": batch})[0]  # [1, n_q, frames] int64
    print(f"codes {codes.shape[1]} x {codes.shape[2]} frames "
          f"({codes.shape[2] / meta['frame_rate']:.2f} s)")
    decoded = decoder.run(None, {decoder.get_inputs()[0].name: codes})[0]
    soundfile.write(target, decoded[0, :, : batch.shape[-1]].T, meta["sample_rate"],
                    subtype="PCM_16")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
