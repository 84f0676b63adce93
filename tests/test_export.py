"""ONNX export: the graphs onnxruntime runs give mmdtok's codes exactly and its audio
within 1e-4, on music, at batch sizes and lengths other than those traced; the folder
says what a runtime needs; the runtime script needs no torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from mmdtok.audio import load_audio
from mmdtok.cli import app
from mmdtok.export import DECODER, ENCODER, METADATA
from mmdtok.persistence import load_codec

ROOT = Path(__file__).resolve().parents[1]
MUSIC = sorted((ROOT / "examples" / "audio").glob("*.flac"))


def _music(codec, seconds: float) -> torch.Tensor:
    """The two excerpts of examples/audio at the codec's rate, cut to ``seconds``:
    [2, C, L]."""
    clips = [load_audio(path, codec.sample_rate, codec.channels)[0] for path in MUSIC]
    length = int(seconds * codec.sample_rate)
    return torch.stack([clip[:, :length] for clip in clips])


def _run(folder: Path, name: str, value: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(folder / name, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: value})[0]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    """The default codec exported through the command line."""
    folder = tmp_path_factory.mktemp("onnx") / "small-music"
    result = CliRunner().invoke(app, ["export-onnx", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_the_default_codec_runs_in_onnxruntime_with_its_exact_codes(default_export):
    folder, output = default_export
    codec = load_codec(None)
    music = _music(codec, 10.0)
    codes = codec.encode(music)
    exported = _run(folder, ENCODER, music.numpy())
    assert exported.dtype == np.int64 and exported.shape == tuple(codes.shape)
    assert np.array_equal(exported, codes.numpy())
    audio = _run(folder, DECODER, codes.numpy())
    assert np.abs(audio - codec.decode(codes).numpy()).max() < 1e-4
    # other sizes than the traced one: one clip of an odd length
    odd = music[:1, :, : 3 * codec.sample_rate + 17]
    assert np.array_equal(_run(folder, ENCODER, odd.numpy()), codec.encode(odd).numpy())
    assert "100.00% of the codes equal" in output


def test_the_folder_says_what_a_runtime_needs(default_export):
    folder, _ = default_export
    codec = load_codec(None)
    meta = json.loads((folder / METADATA).read_text())
    assert meta["format"] == "mmdtok-onnx" and meta["fingerprint"] == codec.fingerprint()
    assert (meta["sample_rate"], meta["channels"], meta["hop_length"], meta["n_q"],
            meta["codebook_size"]) == (codec.sample_rate, codec.channels, codec.hop_length,
                                       codec.num_codebooks, codec.codebook_size)
    assert meta["origin"] == "mmdtok:small-music" and meta["check"]["codes_equal"] == 1.0
    # the shortest input it names is exact: it runs and matches, one sample less fails
    shortest = torch.randn(1, codec.channels, meta["min_samples"]) * 0.1
    assert np.array_equal(_run(folder, ENCODER, shortest.numpy()),
                          codec.encode(shortest).numpy())
    with pytest.raises(Exception):
        _run(folder, ENCODER, shortest[..., :-1].numpy())
    assert sorted(p.name for p in folder.iterdir()) == [DECODER, ENCODER, METADATA]


def test_the_runtime_example_encodes_and_decodes_without_torch(default_export, tmp_path):
    folder, _ = default_export
    out = tmp_path / "decoded.wav"
    # torch cannot be imported in this process: None in sys.modules blocks it
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            "sys.argv = ['onnx_runtime', sys.argv[1], sys.argv[2], sys.argv[3]]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    script = ROOT / "examples" / "onnx_runtime.py"
    result = subprocess.run([sys.executable, "-c", code.replace(
        "sys.argv[0]", repr(str(script))), str(folder), str(MUSIC[0]), str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    codec = load_codec(None)
    reference = codec.decode(codec.encode(load_audio(MUSIC[0], codec.sample_rate,
                                                     codec.channels)[0][None]))
    decoded, rate = load_audio(out, codec.sample_rate, codec.channels)
    assert rate == codec.sample_rate
    # the script writes 16-bit PCM: within its rounding of the codec's own decoding
    length = min(decoded.shape[-1], reference.shape[-1])
    assert (decoded[..., :length] - reference[0, :, :length]).abs().max() < 1e-4 + 2**-15
    assert "frames" in result.stdout


def test_bad_settings_are_user_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export-onnx", "-o", str(tmp_path / "x"), "--n-q", "9"])
    assert result.exit_code == 2 and "--n-q must be in 1..4" in result.output
    assert not (tmp_path / "x").exists()
    result = runner.invoke(app, ["export-onnx", "-o", str(tmp_path / "y"), "--model",
                                 str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no model folder" in result.output
