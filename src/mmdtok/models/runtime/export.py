"""ONNX export of a codec: ``encoder.onnx`` (audio -> codes) and ``decoder.onnx`` (codes
-> audio), with a dynamic batch and length axis, and ``onnx.json`` with what a runtime
needs to use them (rates, codebooks, the weights' fingerprint).

The graphs are the codec's own forward pass (weight norm folded), each layer first put
in the form it exports in (:meth:`Layer.prepare_export
<mmdtok.models.runtime.layer.Layer.prepare_export>`, with the ONNX translations of the
custom operators it brings), traced by ``torch.export`` and translated by ``torch.onnx``
(the ``onnx`` and ``onnxscript`` packages: ``pip install "mmdtok[onnx]"``). With
``onnxruntime`` installed the export runs both graphs on a probe signal and records how
closely they match the codec.

A graph takes the whole input in one pass: memory grows with the length (split long
files into pieces, or use mmdtok's chunked encoding). The exported encoder takes
float32 audio [batch, channels, samples] at the codec's sample rate, ``samples`` at
least ``min_samples`` (onnx.json); the decoder takes int64 codes [batch, n_q, frames]
(a continuous codec: its float32 latent [batch, dim, frames]) and returns
[batch, channels, frames * hop_length].
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from mmdtok.atomic import atomic_path
from mmdtok.models.codec import CodecModel
from mmdtok.models.runtime.layer import Layer
from mmdtok.version import __version__

FORMAT = "mmdtok-onnx"
FORMAT_VERSION = 1
ENCODER, DECODER, METADATA = "encoder.onnx", "decoder.onnx", "onnx.json"
OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, codec: CodecModel, n_q: int) -> None:
        super().__init__()
        self.codec, self.n_q = codec, n_q

    def forward(self, audio: Tensor) -> Tensor:
        return self.codec.quantizer.encode_latent(self.codec.encoder(audio), self.n_q)


class _Decoder(nn.Module):
    def __init__(self, codec: CodecModel) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, codes: Tensor) -> Tensor:
        # decode_codes, not decode: the range check of decode reads the data, which a
        # graph cannot do (an out-of-range code fails in the runtime's Gather instead)
        return self.codec.decoder(self.codec.quantizer.decode_codes(codes))


@dataclass(frozen=True)
class OnnxCheck:
    """How the exported graphs match the codec on noise of two shapes other than the
    examples': the fraction of equal codes (a continuous codec: latent values within
    1e-4) and the largest absolute difference of decoded audio (both decoders given
    the codec's codes)."""

    onnxruntime: str
    codes_equal: float
    audio_max_abs_diff: float


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the folder, its metadata and the runtime check
    (None without onnxruntime)."""

    folder: Path
    metadata: dict
    check: OnnxCheck | None


def export_onnx(codec: CodecModel, folder: str | os.PathLike[str], n_q: int | None = None,
                *, opset: int = OPSET, check: bool = True,
                progress: Callable[[str], None] | None = None) -> OnnxExport:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``onnx.json`` for ``codec`` into
    ``folder`` (created). ``n_q``: the codebooks the encoder emits and the decoder reads
    (default all; fixed in the graphs). Each file is written atomically and
    ``onnx.json`` last: a folder without it is an unfinished export. ``check``: run
    both graphs with onnxruntime when it is installed (see :class:`OnnxCheck`).
    ImportError naming the extra when the exporter's packages are missing."""
    _require("onnx", "onnxscript")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA).unlink(missing_ok=True)  # an earlier export's, until this one ends
    n_q = codec.quantizer.resolve_n_q(n_q)
    model = codec.folded_copy().float().cpu().for_inference(time_major=False)
    model.requires_grad_(False)  # the graphs are for inference: no autograd records
    translations = {}
    for layer in model.modules():
        if isinstance(layer, Layer):
            layer.prepare_export()
            translations.update(layer.onnx_translations())
    say = progress or (lambda _: None)

    encode, decode = _Encoder(model, n_q).eval(), _Decoder(model).eval()
    audio = _probe(codec, batch=2)
    codes = encode(audio)
    min_samples = _shortest(model.encoder, lambda n: encode(audio[..., :n]), audio.shape[-1])
    min_frames = _shortest(model.decoder, lambda n: decode(codes[..., :n]), codes.shape[-1])
    input_name = "latent" if codec.continuous else "codes"
    # Graph optimization (constant folding) is on for the encoder and off for the
    # decoder: with torch 2.13 and onnxscript 0.7 each setting fixes a reshape of the
    # other graph to the example's size. The check below runs both graphs at other
    # sizes than the examples', so that a graph fixed to one size is caught.
    for module, example, name, inputs, outputs, axis, shortest, optimize in (
            (encode, audio, ENCODER, "audio", input_name, "samples", min_samples, True),
            (decode, codes, DECODER, input_name, "audio", "frames", min_frames, False)):
        say(f"tracing and writing {folder / name} ...")
        start = time.monotonic()
        with atomic_path(folder / name) as temp, _quiet_exporter():
            _write_graph(module, example, temp, inputs, outputs, opset, optimize,
                         translations)
        say(f"wrote {folder / name} ({axis} >= {shortest}) in "
            f"{time.monotonic() - start:.0f} s")

    result = None
    if check and _installed("onnxruntime"):
        say("checking both graphs with onnxruntime against mmdtok ...")
        result = _check(codec, n_q, folder)
    tokens = ("latent float32 [batch, dim, frames]" if codec.continuous
              else "codes int64 [batch, n_q, frames]")  # between the two graphs
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "mmdtok_version": __version__,
        "torch_version": torch.__version__, "opset": opset,
        "codec": codec.config.name, "origin": codec.origin,
        "fingerprint": codec.fingerprint(), "config": codec.config.to_dict(),
        "sample_rate": codec.sample_rate, "channels": codec.channels,
        "hop_length": codec.hop_length, "frame_rate": codec.frame_rate,
        "continuous": codec.continuous, "n_q": None if codec.continuous else n_q,
        "codebook_size": None if codec.continuous else codec.codebook_size,
        "latent_dim": codec.latent_dim if codec.continuous else None,
        "min_samples": min_samples, "min_frames": min_frames,
        "encoder": {"file": ENCODER, "input": "audio float32 [batch, channels, samples]",
                    "output": tokens},
        "decoder": {"file": DECODER, "input": tokens,
                    "output": "audio float32 [batch, channels, frames * hop_length]"},
        "check": asdict(result) if result else None,
    }
    with atomic_path(folder / METADATA) as temp:
        temp.write_text(json.dumps(metadata, indent=2) + "\n")
    return OnnxExport(folder, metadata, result)


def _probe(codec: CodecModel, batch: int) -> Tensor:
    """A second of quiet noise (batch 2, so that the batch axis stays dynamic: torch.export
    specializes sizes 0 and 1)."""
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(batch, codec.channels, codec.sample_rate, generator=generator)


def _shortest(model: nn.Module, run: Callable[[int], object], upper: int) -> int:
    """The smallest length n (1 <= n <= upper) for which ``run(n)`` feeds every layer of
    ``model`` an input it :meth:`accepts <mmdtok.models.runtime.layer.Layer.accepts>`
    (a convolution: at least 2 steps, more than its reflection padding): the shortest
    inputs take other branches, which a graph traced at a longer input does not hold.
    Lengths grow with n, so a bisection finds it."""
    seen: list[tuple[Layer, int]] = []
    hooks = [m.register_forward_pre_hook(lambda layer, args: seen.append(
        (layer, args[0].shape[-1]))) for m in model.modules() if isinstance(m, Layer)]

    def fits(n: int) -> bool:
        seen.clear()
        with torch.no_grad():
            run(n)
        return all(layer.accepts(size) for layer, size in seen)

    try:
        if not fits(upper):
            raise RuntimeError(f"no input of at most {upper} steps fits the codec's "
                               f"convolutions")
        low, high = 1, upper
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle + 1, high)
        return low
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx's own notices (optional packages it skips, deprecations inside the
    exporter) are not the user's to act on: hidden while a graph is written."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            yield
    finally:
        logger.setLevel(level)


def _write_graph(module: nn.Module, example: Tensor, path: Path, input_name: str,
                 output_name: str, opset: int, optimize: bool,
                 translations: dict) -> None:
    """``module`` as one ONNX file, its batch and length axes dynamic (inputs shorter
    than the ``min_samples`` / ``min_frames`` of onnx.json are not checked by the graph:
    they fail in the runtime)."""
    dynamic = torch.export.Dim.DYNAMIC
    shapes = {input_name: {0: dynamic, 2: dynamic}}
    torch.onnx.export(module, (example,), path, input_names=[input_name],
                      output_names=[output_name], dynamic_shapes=shapes, opset_version=opset,
                      external_data=False, dynamo=True, optimize=optimize, verbose=False,
                      custom_translation_table=translations)


def _check(codec: CodecModel, n_q: int, folder: Path) -> OnnxCheck:
    """Both graphs in onnxruntime against the codec, on noise of two shapes that differ
    from the examples' (batch 1 and 3, lengths of 1.37 s and 0.61 s plus an odd
    sample). RuntimeError when a graph does not run at one of them (fixed to the
    example's size)."""
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(folder / name,
                                             providers=["CPUExecutionProvider"])
                for name in (ENCODER, DECODER)]
    generator = torch.Generator().manual_seed(1)
    equal, worst, total = 0, 0.0, 0
    for batch, seconds in ((1, 1.37), (3, 0.61)):
        length = int(seconds * codec.sample_rate) + 1
        audio = 0.1 * torch.randn(batch, codec.channels, length, generator=generator)
        reference = codec.encode(audio.to(_device(codec)),
                                 None if codec.continuous else n_q).cpu()
        try:
            encoded = torch.from_numpy(sessions[0].run(None, {"audio": audio.numpy()})[0])
            name = sessions[1].get_inputs()[0].name
            decoded = torch.from_numpy(sessions[1].run(None, {name: reference.numpy()})[0])
        except Exception as error:  # onnxruntime's own error types
            raise RuntimeError(f"the exported graphs do not run on batch {batch} x "
                               f"{length} samples: {error}") from error
        same = (torch.isclose(encoded, reference, rtol=0, atol=1e-4) if codec.continuous
                else encoded == reference)
        equal, total = equal + int(same.sum()), total + same.numel()
        expected = codec.decode(reference.to(_device(codec))).cpu()
        worst = max(worst, float((decoded - expected).abs().max()))
    return OnnxCheck(onnxruntime.__version__, equal / total, worst)


def _device(codec: CodecModel) -> torch.device:
    return next(codec.parameters()).device


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _require(*names: str) -> None:
    missing = [name for name in names if not _installed(name)]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: "
                          f"pip install \"mmdtok[onnx]\"")
