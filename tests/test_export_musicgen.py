"""ONNX export of the MusicGen network (its own file: the slow tier, about a minute and a
half with its codebooks; pytest-xdist runs the files in parallel)."""

import json

import numpy as np
import pytest

from mmdtok.export import DECODER, ENCODER, METADATA, export_onnx
from mmdtok.testing import trained_codebooks
from tests.test_export import _music, _run

pytestmark = pytest.mark.slow  # the published layout: a 1024-wide 2-layer LSTM


def test_the_musicgen_network_exports_with_a_prefix_of_its_codebooks(tmp_path):
    """The MusicGen network (random weights, codebooks fitted to its latents), its
    first 2 codebooks (a prefix: a lower bitrate)."""
    codec = trained_codebooks("musicgen-32khz")
    folder = tmp_path / "musicgen"
    export_onnx(codec, folder, n_q=2)
    music = _music(codec, 6.0)
    codes = codec.encode(music, n_q=2)
    assert np.array_equal(_run(folder, ENCODER, music.numpy()), codes.numpy())
    audio = _run(folder, DECODER, codes.numpy())
    assert audio.shape == (2, 1, codes.shape[-1] * codec.hop_length)
    assert np.abs(audio - codec.decode(codes).numpy()).max() < 1e-4
    meta = json.loads((folder / METADATA).read_text())
    assert meta["n_q"] == 2 and meta["codec"] == "musicgen-32khz"
