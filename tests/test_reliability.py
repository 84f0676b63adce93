"""The command line and the API under hostile but realistic use, one test per class of
defect: outputs checked before any work, failed writes named while the other files go
on, one run per output folder, metadata that must agree with its tensor, every input
used or refused, argument types checked at the API edge, refused calls that change
nothing, and messages that say what happened. Commands run as real processes
(:mod:`tests.cli_processes`); a full disk is a real file-size limit (``ulimit -f``)."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from mmdtok.atomic import is_temporary, write_error
from mmdtok.cli import app
from mmdtok.locks import LOCK_NAME, folder_lock
from mmdtok.models import ChunkSettings, decode_many, encode_many
from mmdtok.persistence import Codec
from mmdtok.streaming import StreamingDecoder, StreamingEncoder
from mmdtok.testing import notes, tiny_vae, trained_codebooks
from mmdtok.tokens import LatentFile, TokenFile, load_encoded, save_latents
from tests.cli_processes import refused, run_mmdtok, run_python

ROOT = Path(__file__).parents[1]
SR = 24_000


def _mmdtok(*args, **options):
    result = run_mmdtok(*args, **options)
    assert "Traceback" not in result.stderr, result.stderr
    return result


_refused = refused


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec") / "model"
    trained_codebooks("small-music").save_pretrained(folder)
    return folder


def _wav(path, seconds, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, notes(seconds, SR, seed=seed).T.numpy(), SR)
    return path


def _leftovers(folder):
    """Files under ``folder`` that a finished run must not leave: temporaries, locks."""
    return [p for p in Path(folder).rglob("*") if is_temporary(p) or p.name == LOCK_NAME]


# 1. Outputs are checked before any work.

def test_every_output_path_is_checked_before_any_work(model, tmp_path):
    clip = _wav(tmp_path / "clip.wav", 0.5)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("mine")
    scored = ("evaluate", clip, "--model", model, "--baseline", "", "--no-visqol")
    for option, words in ((tmp_path / "folder", "is a folder"),
                          (clip, "is one of the inputs"),
                          (tmp_path / "a_file" / "scores.json", "a_file is a file")):
        result = _mmdtok(*scored, "--json", option)
        _refused(result, words)
        assert result.stdout == ""  # refused before anything was scored
    assert (tmp_path / "a_file").read_text() == "mine" and clip.stat().st_size > 0

    tokens = tmp_path / "tok"
    assert _mmdtok("encode", clip, "-o", tokens, "--model", model).returncode == 0
    _refused(_mmdtok("inspect", tokens, "--plot", tmp_path / "folder"), "is a folder")
    _refused(_mmdtok("inspect", tokens, "--plot", tmp_path / "mi.xyz"), "no .xyz images")
    for command in (("train-codec", tmp_path, "steps=1"), ("export-onnx", "--model", model),
                    ("encode", clip, "--model", model), ("decode", tokens)):
        _refused(_mmdtok(*command, "-o", tmp_path / "a_file"), "a_file is a file")
    assert (tmp_path / "a_file").read_text() == "mine"


# 2. A failed write is named, leaves nothing partial, and the other files go on.

def test_a_write_beyond_the_file_size_limit_fails_alone_and_names_the_cause(model, tmp_path):
    short = [_wav(tmp_path / "in" / f"short{i}.wav", 0.2, seed=i) for i in range(2)]
    long = _wav(tmp_path / "in" / "long.wav", 4.0, seed=5)
    limit = 1_600  # bytes: a short clip's token file fits, the long one's (2.9 kB) does not
    encoded = _mmdtok("encode", tmp_path / "in", "-o", tmp_path / "tok", "--model", model,
                      file_size_limit=limit)
    assert encoded.returncode == 1, encoded.stderr
    assert "2 encoded, 0 skipped (already there), 1 failed" in encoded.stderr
    assert (f"failed: {long}: cannot write {tmp_path / 'tok' / 'long.mmdtok'}: the file is "
            "too large (over the file-size limit, see ulimit -f)") in encoded.stderr
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "short0.mmdtok", "short1.mmdtok"]

    assert _mmdtok("encode", long, "-o", tmp_path / "tok", "--model", model).returncode == 0
    decoded = _mmdtok("decode", tmp_path / "tok", "-o", tmp_path / "wav",
                      file_size_limit=40_000)  # 0.2 s of 16-bit audio fit, 4 s do not
    assert decoded.returncode == 1 and "2 decoded" in decoded.stderr, decoded.stderr
    assert f"cannot write {tmp_path / 'wav' / 'long.wav'}: the file is too large" in (
        decoded.stderr)
    assert sorted(p.name for p in (tmp_path / "wav").iterdir()) == ["short0.wav", "short1.wav"]
    assert soundfile.info(tmp_path / "wav" / "short1.wav").frames == len(
        soundfile.read(short[1])[0])
    assert _leftovers(tmp_path) == []


def test_a_training_run_on_a_full_disk_ends_in_one_line_naming_the_cause(tmp_path):
    _wav(tmp_path / "data" / "a.wav", 1.0)
    result = _mmdtok("train-codec", tmp_path / "data", "-o", tmp_path / "run", "steps=1",
                     "batch_size=1", "segment_seconds=0.2", "valid_fraction=0",
                     "discriminator_filters=4", file_size_limit=200_000)
    _refused(result, "the file is too large (over the file-size limit", code=1)
    assert _leftovers(tmp_path / "run") == []


def test_the_cause_of_a_failed_write_is_named_from_its_errno():
    with pytest.raises(OSError) as full, open("/dev/full", "wb") as device:
        device.write(b"x")
        device.flush()
    assert write_error(full.value, "out.wav") == (
        "cannot write out.wav: the disk is full (no space left on the device)")
    assert write_error(PermissionError(13, "Permission denied"), "x") == (
        "cannot write x: permission denied")
    assert write_error(OSError(5000, "odd"), "x") == "cannot write x: odd"  # as the system says


# 3. One run at a time writes into an output folder.

def test_a_folder_in_use_by_another_run_is_refused_naming_it(model, tmp_path):
    clip = _wav(tmp_path / "clip.wav", 0.3)
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        for command in (("encode", clip, "--model", model), ("export-onnx", "--model", model),
                        ("train-codec", tmp_path, "steps=1")):
            _refused(_mmdtok(*command, "-o", out), f"{out} is being written by another mmdtok "
                     f"run (process {os.getpid()} on ", "wait for it to end")
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]
    assert not (out / LOCK_NAME).exists()  # released: removed
    assert _mmdtok("encode", clip, "-o", out, "--model", model).returncode == 0
    assert _leftovers(out) == []


def test_a_killed_run_leaves_its_folder_to_the_next_one(model, tmp_path):
    clip = _wav(tmp_path / "clip.wav", 0.3)
    out = tmp_path / "out"
    out.mkdir()
    killed = run_python("import os, signal, sys\nfrom mmdtok.locks import folder_lock\n"
                        "with folder_lock(sys.argv[1]):\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)", out)
    assert killed.returncode == -signal.SIGKILL and (out / LOCK_NAME).exists()
    resumed = _mmdtok("encode", clip, "-o", out, "--model", model)
    assert resumed.returncode == 0 and "1 encoded" in resumed.stderr


@pytest.mark.slow  # slow tier: two fresh interpreters at once
def test_two_runs_racing_into_one_folder_leave_one_codecs_files(model, tmp_path):
    for i in range(3):
        _wav(tmp_path / "in" / f"{i}.wav", 0.5, seed=i)
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, "-m", "mmdtok", "encode", str(tmp_path / "in"),
                              "-o", str(out), "--model", name], stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for name in (str(model), "mmdtok:small-music-causal")]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 2], errors
    winner = Codec.from_pretrained(model if codes[0] == 0 else "mmdtok:small-music-causal")
    assert {load_encoded(p).codec_fingerprint for p in out.glob("*.mmdtok")} == {
        winner.fingerprint()}
    assert len(list(out.glob("*.mmdtok"))) == 3


# 4. A file's metadata agree with its tensor, and with mmdtok.limits.

def _frames(length, sample_rate, frame_rate=75.0):
    return math.ceil(length * frame_rate / sample_rate)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["length", "num_codebooks", "codebook_size", "sample_rate",
                              "channels"]),
       value=st.one_of(st.integers(-2, 3 * 320 * 150), st.sampled_from([24_000, 48_000,
                                                                          2_000_000, 2**21])))
def test_a_token_file_is_read_exactly_when_its_metadata_agree_with_its_codes(
        field, value, tmp_path):
    codes = torch.randint(0, 100, (4, 150), generator=torch.Generator().manual_seed(0))
    meta = TokenFile(codes=codes, codec="toy", codec_fingerprint="0", sample_rate=SR,
                     channels=1, frame_rate=75.0, codebook_size=1024,
                     length=150 * 320 - 7).metadata() | {field: str(value)}
    path = tmp_path / "t.mmdtok"
    save_file({"codes": codes.to(torch.int16)}, str(path), metadata=meta)
    number = {k: int(meta[k]) for k in ("length", "num_codebooks", "codebook_size",
                                         "sample_rate", "channels")}
    agrees = (1 <= number["sample_rate"] <= 1_000_000 and 1 <= number["channels"] <= 64
              and number["length"] >= 0 and number["num_codebooks"] == 4
              and int(codes.max()) < number["codebook_size"] <= 2**20
              and _frames(number["length"], number["sample_rate"]) == 150)
    if agrees:
        assert load_encoded(path).num_frames == 150
    else:
        with pytest.raises(ValueError, match=field):
            load_encoded(path)


def test_a_latent_file_whose_metadata_disagree_is_refused(tmp_path):
    latents = torch.randn(16, 40)
    good = LatentFile(latents=latents, codec="toy", codec_fingerprint="0", sample_rate=16_000,
                      channels=2, frame_rate=500.0, length=40 * 32, dtype="float32", groups=4)
    for field, value, stored in (("dtype", "float16", torch.float32),
                                 ("latent_dim", "8", torch.float32),
                                 ("length", "0", torch.float32),
                                 ("channels", "100", torch.float32)):
        path = tmp_path / f"{field}.mmdlat"
        save_file({"latents": latents.to(stored)}, str(path),
                  metadata=good.metadata() | {field: value})
        with pytest.raises(ValueError, match=field):
            load_encoded(path)
        result = _mmdtok("info", path)
        _refused(result, path.name, field)


def test_a_token_file_whose_length_says_zero_is_refused_by_every_command(tmp_path):
    codes = torch.randint(0, 8, (2, 150), generator=torch.Generator().manual_seed(0))
    good = TokenFile(codes=codes, codec="toy", codec_fingerprint="0", sample_rate=SR,
                     channels=1, frame_rate=75.0, codebook_size=8, length=150 * 320)
    path = tmp_path / "t" / "zero.mmdtok"
    path.parent.mkdir()
    save_file({"codes": codes.to(torch.int16)}, str(path), metadata=good.metadata() | {
        "length": "0"})
    words = ("length 0 samples at sample_rate 24000 Hz make 0 frames", "the codes hold 150")
    _refused(_mmdtok("info", path), *words)
    _refused(_mmdtok("inspect", path), *words)
    decoded = _mmdtok("decode", path, "-o", tmp_path / "wav", "--model", "mmdtok:small-music")
    assert decoded.returncode == 1 and all(w in decoded.stderr for w in words), decoded.stderr
    assert not (tmp_path / "wav" / "zero.wav").exists()


# 5. Every input is used or refused.

def test_every_input_is_used_or_refused(model, tmp_path):
    clip = _wav(tmp_path / "clip.wav", 0.5)
    tokens, latents = tmp_path / "tok", tmp_path / "lat"
    assert _mmdtok("encode", clip, "-o", tokens, "--model", model).returncode == 0
    vae = tmp_path / "vae"
    tiny_vae(channels=1).save_pretrained(vae)
    soundfile.write(tmp_path / "clip16.wav", notes(3.0, 16_000).T.numpy(), 16_000)
    assert _mmdtok("encode", tmp_path / "clip16.wav", "-o", latents, "--model", vae
                   ).returncode == 0
    _refused(_mmdtok("inspect", tokens, latents), "clip.mmdtok holds codes",
             "clip16.mmdlat latents", "separate runs")
    _refused(_mmdtok("inspect", tokens, "--groups", "2"), "--groups applies to latent files")
    _refused(_mmdtok("inspect", latents, "--plot", tmp_path / "x.png"), "--plot")
    (tmp_path / "empty").mkdir()
    for command in (("encode", tmp_path / "empty", "-o", tmp_path / "o", "--model", model),
                    ("decode", tokens, tmp_path / "empty", "-o", tmp_path / "o"),
                    ("inspect", tokens, tmp_path / "empty"),
                    ("evaluate", clip, tmp_path / "empty", "--model", model)):
        _refused(_mmdtok(*command), "empty holds no")
    _refused(_mmdtok("encode", clip, "-o", tmp_path / "o", "--model", model, "--split",
                     "test"), "no input is a manifest")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(clip), "split": "train"}) + "\n")
    _refused(_mmdtok("evaluate", manifest, "--model", model, "--split", "test"),
             "no entries of the split 'test' (its splits: train)")
    assert not (tmp_path / "o").exists()


# 6. Arguments are checked at the API edge, naming the argument.

@pytest.fixture(scope="module")
def causal():
    return Codec.from_pretrained("mmdtok:small-music-causal")


BAD_N_Q = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.booleans(),
                    st.integers(-5, 0), st.integers(5, 10**6), st.just([2]))


@settings(max_examples=40, deadline=None)
@given(n_q=BAD_N_Q)
def test_a_bad_n_q_is_refused_naming_it_by_every_entry_point(causal, n_q):
    audio = torch.zeros(1, 1, 960)
    for call in (lambda: causal.encode(audio, n_q=n_q),
                 lambda: StreamingEncoder(causal, n_q=n_q),
                 lambda: encode_many(causal, [audio[0]], n_q),
                 lambda: causal.quantizer.resolve_n_q(n_q)):
        with pytest.raises((TypeError, ValueError), match="n_q"):
            call()


@settings(max_examples=30, deadline=None)
@given(length=st.one_of(st.floats(allow_nan=True), st.integers(-10**6, -1),
                        st.integers(3 * 320 + 1, 10**9), st.text(max_size=2)))
def test_a_bad_length_is_refused_naming_it(causal, length):
    codes = torch.zeros(1, 4, 3, dtype=torch.long)
    for call in (lambda: causal.decode(codes, length=length),
                 lambda: decode_many(causal, [codes[0]], [length])):
        with pytest.raises((TypeError, ValueError), match="length"):
            call()


def test_a_batch_of_zero_is_refused_everywhere(causal):
    audio, codes = torch.zeros(0, 1, 960), torch.zeros(0, 4, 3, dtype=torch.long)
    for call in (lambda: causal.encode(audio), lambda: causal(audio),
                 lambda: causal.encode_streams(audio), lambda: causal.decode(codes),
                 lambda: StreamingEncoder(causal).push(audio),
                 lambda: StreamingDecoder(causal).push(codes)):
        with pytest.raises(ValueError, match="batch of 0|at least one item"):
            call()
    with pytest.raises(TypeError, match="window must be an integer"):
        ChunkSettings(window=2.5)
    with pytest.raises(TypeError, match="the codec torch.float32"):
        causal.encode_streams(torch.zeros(1, 1, 960, dtype=torch.float64))
    same = causal.encode(torch.full((1, 1, 960), 0.1, dtype=torch.float64))  # converted
    assert torch.equal(same, causal.encode(torch.full((1, 1, 960), 0.1)))


# 7. A refused call leaves the object as it was.

# (a push that is refused, whether it is refused before any valid push too)
BAD_AUDIO = [(torch.zeros(1, 2, 480), True), (torch.zeros(1, 1, 480, dtype=torch.int16), True),
             (torch.full((1, 1, 480), float("nan")), True), (torch.zeros(1, 480), True),
             ([0.0] * 480, True), (torch.zeros(2, 1, 480), False)]  # another batch
BAD_CODES = [(torch.zeros(1, 4, 2), True), (torch.full((1, 4, 2), 5000), True),
             (torch.zeros(1, 5, 2).long(), True), (torch.zeros(4, 2).long(), True),
             (torch.zeros(1, 2, 2).long(), False), (torch.zeros(2, 4, 2).long(), False)]


def _with_refusals(stream, pieces, refusals, bad):
    """``pieces`` pushed in order, each preceded by the bad push ``bad[refusals[i]]``
    when there is one at its position; every bad push must be refused."""
    out = []
    for i, piece in enumerate(pieces):
        if i in refusals:
            value, always = bad[refusals[i]]
            if always or i > 0:
                with pytest.raises((ValueError, TypeError)):
                    stream.push(value)
        out.append(stream.push(piece))
    return torch.cat(out + [stream.flush()], -1)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(0, 900), min_size=2, max_size=6).filter(any),
       refusals=st.dictionaries(st.integers(0, 5), st.integers(0, 5), max_size=4))
def test_a_refused_push_changes_nothing(causal, sizes, refusals):
    audio = 0.3 * notes(sum(sizes) / SR + 0.1, SR)[None, :, : sum(sizes)]
    bounds = np.cumsum([0, *sizes])
    pieces = [audio[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    clean = _with_refusals(StreamingEncoder(causal), pieces, {}, BAD_AUDIO)
    refused = _with_refusals(StreamingEncoder(causal), pieces, refusals, BAD_AUDIO)
    assert torch.equal(clean, refused)
    code_pieces = list(torch.split(clean, 2, -1))
    clean_audio = _with_refusals(StreamingDecoder(causal), code_pieces, {}, BAD_CODES)
    refused_audio = _with_refusals(StreamingDecoder(causal), code_pieces, refusals, BAD_CODES)
    assert torch.equal(clean_audio, refused_audio)


# 9. Messages say what happened.

def test_a_missing_recorded_folder_is_named_as_a_folder(model, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((model / name).read_bytes())
    clip = _wav(tmp_path / "clip.wav", 0.3)
    assert _mmdtok("encode", clip, "-o", tmp_path / "tok", "--model", copy).returncode == 0
    for name in ("config.json", "model.safetensors"):
        (copy / name).unlink()
    copy.rmdir()
    result = _mmdtok("decode", tmp_path / "tok", "-o", tmp_path / "wav")
    assert f"codec: the folder {copy}, which does not exist" in result.stderr
    assert "Hugging Face Hub" not in result.stderr
    _refused(result, str(copy))


def test_a_latent_inspection_names_the_groups_it_was_given(tmp_path):
    latents = torch.randn(16, 200, generator=torch.Generator().manual_seed(0))
    save_latents(tmp_path / "a.mmdlat", LatentFile(
        latents=latents, codec="toy", codec_fingerprint="0", sample_rate=16_000, channels=1,
        frame_rate=500.0, length=200 * 32, groups=4))
    line = _refused(_mmdtok("inspect", tmp_path / "a.mmdlat", "--groups", "3"),
                    "groups must be at least 2 and divide the 16 latent channels, got 3")
    assert "pass --groups" not in line and "codec's own" not in line


def test_help_shows_every_text_as_written():
    """Bracketed words (``mmdtok[onnx]``, ``[B, K, T]``) are text, not markup: every help
    text of every command and option appears in ``--help``, word for word."""
    runner = CliRunner()
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        shown = " ".join(runner.invoke(app, [name, "--help"]).output.split())
        texts = [command.help or ""] + [p.help or "" for p in command.params
                                        if getattr(p, "help", None)]
        for text in texts:
            for word in text.split():
                if "[" in word or "]" in word:
                    assert word in shown, (name, word)
    assert 'pip install "mmdtok[onnx]"' in " ".join(
        runner.invoke(app, ["export-onnx", "--help"]).output.split())
