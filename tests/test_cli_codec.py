"""The encode / decode / info commands on real audio files, in-process and as real
processes (Ctrl-C, torchrun)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile
import torch
from typer.testing import CliRunner

from mmdtok.cli import app
from mmdtok.testing import notes, trained_codebooks
from mmdtok.tokens import load_tokens

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec") / "model"
    trained_codebooks("small-music").save_pretrained(folder)
    return folder


def _music(folder: Path, specs) -> list[Path]:
    paths = []
    for i, (name, rate, seconds, channels) in enumerate(specs):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, notes(seconds, rate, seed=i, channels=channels).T.numpy(), rate)
        paths.append(path)
    return paths


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_encode_mirrors_folders_reports_failures_and_resumes(model, tmp_path):
    _music(tmp_path / "in", [("a.wav", 24_000, 1.5, 1), ("sub/b.flac", 44_100, 0.7, 2),
                             ("sub/deeper/c.ogg", 16_000, 2.2, 1)])
    (tmp_path / "in" / "broken.wav").write_text("not audio")
    with pytest.warns(UserWarning, match=r"b\.flac: 2 channel\(s\) mixed to 1"):
        result = _invoke("encode", tmp_path / "in", "-o", tmp_path / "tok", "--model", model)
    assert result.exit_code == 1
    assert "3 encoded, 0 skipped" in result.output and "broken.wav" in result.output
    written = sorted(p.relative_to(tmp_path / "tok").as_posix()
                     for p in (tmp_path / "tok").rglob("*.mmdtok"))
    assert written == ["a.mmdtok", "sub/b.mmdtok", "sub/deeper/c.mmdtok"]
    tokens = load_tokens(tmp_path / "tok" / "sub" / "b.mmdtok")
    assert tokens.source_sample_rate == 44_100 and tokens.sample_rate == 24_000
    assert abs(tokens.length - 0.7 * 24_000) <= 1 and tokens.num_frames == 53

    again = _invoke("encode", tmp_path / "in", "-o", tmp_path / "tok", "--model", model)
    assert "0 encoded, 3 skipped" in again.output
    forced = _invoke("encode", tmp_path / "in" / "a.wav", "-o", tmp_path / "tok", "--model",
                     model, "--overwrite", "--n-q", "2")
    assert forced.exit_code == 0 and load_tokens(tmp_path / "tok" / "a.mmdtok").num_codebooks == 2


def test_decode_restores_length_and_rate_and_refuses_other_codecs(model, tmp_path):
    _music(tmp_path / "in", [("a.wav", 24_000, 1.3, 1)])
    _invoke("encode", tmp_path / "in", "-o", tmp_path / "tok", "--model", model)
    result = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "out", "--format", "flac")
    assert result.exit_code == 0, result.output
    info = soundfile.info(tmp_path / "out" / "a.flac")
    assert info.samplerate == 24_000 and info.frames == round(1.3 * 24_000)

    other = tmp_path / "other"
    trained_codebooks("small-music", seed=1).save_pretrained(other)
    refused = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "out2", "--model", other)
    assert refused.exit_code == 1 and "were encoded by codec small-music" in refused.output
    origin = load_tokens(tmp_path / "tok" / "a.mmdtok").codec_origin
    assert f"decode them with --model {origin}" in refused.output  # the CLI's own words
    assert not (tmp_path / "out2" / "a.wav").exists()


def test_info_describes_token_files_and_models(model, tmp_path):
    _music(tmp_path / "in", [("a.wav", 24_000, 2.0, 1)])
    _invoke("encode", tmp_path / "in", "-o", tmp_path / "tok", "--model", model)
    tokens = _invoke("info", tmp_path / "tok" / "a.mmdtok")
    assert "4 x 1024" in tokens.output and "150 at 75 Hz" in tokens.output
    described = _invoke("info", model)
    assert "3.00 kbps" in described.output and "24000 Hz" in described.output


def test_user_mistakes_exit_2_with_a_message(model, tmp_path):
    missing = _invoke("encode", tmp_path / "nothing.wav", "-o", tmp_path / "o", "--model", model)
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    empty = _invoke("encode", tmp_path, "-o", tmp_path / "o", "--model", model)
    assert empty.exit_code == 2 and "holds no audio file" in empty.output
    soundfile.write(tmp_path / "a.wav", notes(0.2, 24_000).T.numpy(), 24_000)
    no_model = _invoke("encode", tmp_path, "-o", tmp_path / "o", "--model", tmp_path / "none")
    assert no_model.exit_code == 2 and "no model folder" in no_model.output
    bad_nq = _invoke("encode", tmp_path, "-o", tmp_path / "o", "--model", model, "--n-q", "9")
    assert bad_nq.exit_code == 2 and "--n-q must be in 1..4" in bad_nq.output


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_ctrl_c_leaves_only_complete_token_files(model, tmp_path):
    _music(tmp_path / "in", [(f"{i:02d}.wav", 24_000, 3.0, 1) for i in range(40)])
    out = tmp_path / "tok"
    proc = subprocess.Popen([sys.executable, "-m", "mmdtok", "encode", str(tmp_path / "in"),
                             "-o", str(out), "--model", str(model), "--batch-size", "1"],
                            env=_env(), stderr=subprocess.PIPE, text=True,
                            # A job started in the background (nohup, `&`, some CI runners)
                            # inherits SIGINT ignored; give the child the terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    finished = lambda: [p for p in out.glob("*.mmdtok") if not p.name.startswith(".")]
    while time.time() < deadline and len(finished()) < 3:  # not counting .part files
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "no partial file is left" in err
    done = finished()
    assert 3 <= len(done) < 40
    for path in done:
        assert load_tokens(path).num_frames == 225
    assert not [p for p in out.iterdir() if ".part" in p.name]


# slow tier: torchrun
@pytest.mark.slow
def test_torchrun_shares_the_files_across_ranks(model, tmp_path):
    _music(tmp_path / "in", [(f"{i}.wav", 24_000, 0.5 + i / 4, 1) for i in range(5)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "mmdtok", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "dist"),
           "--model", str(model)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "3 encoded" in result.stderr and "2 encoded" in result.stderr
    _invoke("encode", tmp_path / "in", "-o", tmp_path / "one", "--model", model)
    for path in sorted((tmp_path / "one").glob("*.mmdtok")):
        distributed = load_tokens(tmp_path / "dist" / path.name)
        assert torch.equal(distributed.codes, load_tokens(path).codes)


def test_encode_and_decode_use_the_bundled_codec_without_model(tmp_path):
    excerpt = ROOT / "examples" / "audio" / "bach_bwv154.3_woodwinds.flac"
    result = _invoke("encode", excerpt, "-o", tmp_path / "tok")
    assert result.exit_code == 0, result.output
    tokens = load_tokens(tmp_path / "tok" / "bach_bwv154.3_woodwinds.mmdtok")
    assert tokens.codec_origin == "mmdtok:small-music" and tokens.num_codebooks == 4
    result = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "dec")
    assert result.exit_code == 0, result.output
    decoded, rate = soundfile.read(tmp_path / "dec" / "bach_bwv154.3_woodwinds.wav")
    assert rate == 24_000 and len(decoded) == tokens.length
    # the shipped causal codec the same way; its token files name it, and decode finds it
    result = _invoke("encode", excerpt, "-o", tmp_path / "causal", "--model",
                     "mmdtok:small-music-causal")
    assert result.exit_code == 0, result.output
    causal = load_tokens(tmp_path / "causal" / "bach_bwv154.3_woodwinds.mmdtok")
    assert causal.codec_origin == "mmdtok:small-music-causal"
    assert not torch.equal(causal.codes, tokens.codes)
    result = _invoke("decode", tmp_path / "causal", "-o", tmp_path / "causal-dec")
    assert result.exit_code == 0, result.output
    assert len(soundfile.read(tmp_path / "causal-dec" / "bach_bwv154.3_woodwinds.wav")[0]
               ) == causal.length
    assert _invoke("encode", excerpt, "-o", tmp_path / "x", "--model", "mmdtok:nope"
                   ).exit_code == 2
    refused = _invoke("encode", excerpt, "-o", tmp_path / "x", "--revision", "v1")
    assert refused.exit_code == 2 and "--revision applies to Hub repositories" in refused.output


def test_inspect_reports_dependence_of_token_files_and_plots_it(tmp_path):
    from mmdtok.tokens import TokenFile, save_tokens

    generator = torch.Generator().manual_seed(0)
    base = torch.randint(0, 16, (1, 3_000), generator=generator)
    codes = torch.cat([base, base, torch.randint(0, 16, (2, 3_000), generator=generator)])
    for i, part in enumerate((codes[:, :1_000], codes[:, 1_000:])):
        save_tokens(tmp_path / "tok" / f"{i}.mmdtok",
                    TokenFile(codes=part, codec="toy", codec_fingerprint="0",
                              sample_rate=24_000, channels=1, frame_rate=75.0,
                              codebook_size=16, length=part.shape[1] * 320))
    # A complete token file left under its temporary name by a write killed before the
    # rename: never counted (it would be counted twice).
    (tmp_path / "tok" / ".1.0123abcd.part.mmdtok").write_bytes(
        (tmp_path / "tok" / "1.mmdtok").read_bytes())
    result = _invoke("inspect", tmp_path / "tok", "--pattern", "parallel", "--plot",
                     tmp_path / "mi.png")
    assert result.exit_code == 0, result.output
    assert "files                2 (3,000 frames)" in result.output
    row0 = next(line for line in result.output.splitlines() if line.startswith("     0  1.0000"))
    assert float(row0.split()[2]) == pytest.approx(1.0, abs=1e-3)  # the copied codebook
    assert abs(float(row0.split()[3])) < 0.05
    assert (tmp_path / "mi.png").read_bytes()[:4] == b"\x89PNG"
    assert _invoke("inspect", tmp_path / "none").exit_code == 2


def test_a_corrupt_token_file_sorted_first_fails_alone(tmp_path):
    from mmdtok import Codec
    from mmdtok.tokens import save_tokens, token_file

    codec = Codec.bundled()
    audio = torch.randn(1, 1, 4_800, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        codes = codec.encode(audio)[0]
    save_tokens(tmp_path / "tok" / "b_good.mmdtok", token_file(codec, codes, 4_800))
    (tmp_path / "tok" / "a_corrupt.mmdtok").write_bytes(b"not a token file at all")
    result = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "dec")
    assert result.exit_code == 1, result.output  # a failure reported, the rest decoded
    assert "1 decoded" in result.output and "1 failed" in result.output
    assert "a_corrupt.mmdtok" in result.output
    assert (tmp_path / "dec" / "b_good.wav").exists()
    assert not (tmp_path / "dec" / "a_corrupt.wav").exists()
    (tmp_path / "tok" / "b_good.mmdtok").write_bytes(b"broken too")
    nothing = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "dec2")
    assert nothing.exit_code == 2 and "no token file could be read" in nothing.output
