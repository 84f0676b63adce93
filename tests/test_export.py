"""ONNX export: the graphs onnxruntime runs give mmdtok's codes exactly and its audio
within 1e-4, on music, at batch sizes and lengths other than those traced; the folder
says what a runtime needs; the runtime script needs no torch."""

import json
import os
import re
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
from mmdtok.models import CodecConfig, SEANetConfig
from mmdtok.persistence import load_codec
from mmdtok.testing import trained_codebooks

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


def _tiny(folder: Path) -> None:
    """The default codec's layout made small (4 filters, 32 latent channels, 64 codes)
    with a 2-layer LSTM, codebooks fitted to its latents, saved as a model folder: every
    layer kind the export translates (a multi-layer LSTM included), at the same exactness
    on music; the export's cost is then torch.export's tracing alone (about 20 s)."""
    config = CodecConfig(name="tiny-export", sample_rate=24_000, seanet=SEANetConfig(
        dimension=32, n_filters=4, ratios=(8, 5, 4), lstm_layers=2), quantizer={
        "kind": "rvq", "num_codebooks": 4, "codebook_size": 64,
        "codebook_dropout": "uniform", "latent_norm": True})
    trained_codebooks(config).save_pretrained(folder)


@pytest.fixture(scope="module", params=["tiny", pytest.param("default", marks=pytest.mark.slow)])
def exported(request, tmp_path_factory):
    """(folder, command output, codec, origin): a codec exported through the command
    line, the tiny one of :func:`_tiny` (fast tier) or the default codec (slow tier: the
    shipped model itself)."""
    root = tmp_path_factory.mktemp("onnx")
    folder = root / request.param
    args = ["export-onnx", "-o", str(folder)]
    if request.param == "tiny":
        _tiny(root / "model")
        args += ["--model", str(root / "model")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    codec = load_codec(None if request.param == "default" else root / "model")
    origin = "mmdtok:small-music" if request.param == "default" else codec.origin
    return folder, result.output, codec, origin


def test_the_codec_runs_in_onnxruntime_with_its_exact_codes(exported):
    folder, output, codec, _ = exported
    music = _music(codec, 10.0)
    codes = codec.encode(music)
    ours = _run(folder, ENCODER, music.numpy())
    assert ours.dtype == np.int64 and ours.shape == tuple(codes.shape)
    assert np.array_equal(ours, codes.numpy())
    audio = _run(folder, DECODER, codes.numpy())
    assert np.abs(audio - codec.decode(codes).numpy()).max() < 1e-4
    # other sizes than the traced one: one clip of an odd length
    odd = music[:1, :, : 3 * codec.sample_rate + 17]
    assert np.array_equal(_run(folder, ENCODER, odd.numpy()), codec.encode(odd).numpy())
    assert "100.00% of the codes equal" in output
    # each slow step says when it starts and how long it took; torch's notices are hidden
    assert "tracing and writing" in output and re.search(r"wrote .*encoder.onnx .* in \d+ s",
                                                         output)
    assert "torchvision" not in output and "deprecated" not in output


def test_the_folder_says_what_a_runtime_needs(exported):
    folder, _, codec, origin = exported
    meta = json.loads((folder / METADATA).read_text())
    assert meta["format"] == "mmdtok-onnx" and meta["fingerprint"] == codec.fingerprint()
    assert (meta["sample_rate"], meta["channels"], meta["hop_length"], meta["n_q"],
            meta["codebook_size"]) == (codec.sample_rate, codec.channels, codec.hop_length,
                                       codec.num_codebooks, codec.codebook_size)
    assert meta["origin"] == origin and meta["check"]["codes_equal"] == 1.0
    # the shortest input it names is exact: it runs and matches, one sample less fails
    shortest = torch.randn(1, codec.channels, meta["min_samples"]) * 0.1
    assert np.array_equal(_run(folder, ENCODER, shortest.numpy()),
                          codec.encode(shortest).numpy())
    with pytest.raises(Exception):
        _run(folder, ENCODER, shortest[..., :-1].numpy())
    assert sorted(p.name for p in folder.iterdir()) == [DECODER, ENCODER, METADATA]


def test_the_runtime_example_encodes_and_decodes_without_torch(exported, tmp_path):
    folder, _, codec, _ = exported
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
