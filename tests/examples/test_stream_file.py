"""examples/stream_file.py: a file through the streaming encoder and decoder in 20 ms
pieces, with its latency, real-time factor and agreement with the whole pass."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import soundfile
import torch

from mmdtok.audio import load_audio
from mmdtok.models import CodecConfig, SEANetConfig
from mmdtok.testing import trained_codebooks

ROOT = Path(__file__).parents[2]
MUSIC = ROOT / "examples" / "audio" / "bach_bwv154.3_woodwinds.flac"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("stream_file", ROOT / "examples" /
                                                  "stream_file.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves its annotations there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _causal(pad_mode: str) -> CodecConfig:
    return CodecConfig(name=f"tiny-causal-{pad_mode}", sample_rate=16_000,
                       seanet=SEANetConfig(dimension=16, n_filters=4, ratios=(4, 4, 2),
                                           lstm_layers=1, causal=True, pad_mode=pad_mode),
                       quantizer={"kind": "rvq", "num_codebooks": 3, "codebook_size": 64})


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_a_real_recording_streams_as_the_whole_pass_decodes(example, pad_mode):
    codec = trained_codebooks(_causal(pad_mode))
    audio, _ = load_audio(MUSIC, codec.sample_rate, codec.channels)
    report, out = example.run(codec, audio[:, : 2 * codec.sample_rate], piece_ms=20.0)
    assert out.shape == (1, 2 * codec.sample_rate)
    assert report.piece_ms == 20.0 and report.frame_ms == 2.0  # hop 32 at 16 kHz
    assert len(report.compute_ms) == 100 and report.rtf > 0
    assert report.codes_equal > 0.99 and report.max_abs_diff < 1e-4
    # zero padding starts at once: one frame of latency; reflection waits at the start
    if pad_mode == "constant":
        assert report.startup_ms == 0 and report.latency_ms == 2.0
    else:
        assert report.startup_ms > 0


def test_the_command_reports_and_writes_the_streamed_audio(example, tmp_path, capsys):
    trained_codebooks(_causal("constant")).save_pretrained(tmp_path / "model")
    out = tmp_path / "streamed.wav"
    example.main([str(MUSIC), "--model", str(tmp_path / "model"), "--seconds", "1",
                  "--out", str(out)])
    printed = capsys.readouterr().out
    for words in ("latency (algorithmic): 2.0 ms", "compute per 20.0 ms piece",
                  "real-time factor", "of the codes equal"):
        assert words in printed
    data, rate = soundfile.read(out)
    assert rate == 16_000 and data.shape == (16_000,)
    assert torch.isfinite(torch.from_numpy(data)).all()


def test_a_codec_that_looks_ahead_is_refused_with_the_reason(example, capsys):
    with pytest.raises(SystemExit):
        example.main([str(MUSIC), "--model", "mmdtok:small-music", "--seconds", "1"])
    assert "is not causal" in capsys.readouterr().err
