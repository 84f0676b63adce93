"""User mistakes and damaged files, each through a real ``mmdtok`` process (forked from one
that has imported it: :mod:`tests.cli_processes`): one line on stderr naming the file or
setting, exit code 2, no traceback, nothing half-written."""

import json
import os
import pickle
from pathlib import Path

import pytest
import soundfile
import torch
from safetensors.torch import save_file

from mmdtok.testing import notes, trained_codebooks
from mmdtok.tokens import TokenFile, load_tokens, save_tokens
from tests.cli_processes import refused, run_mmdtok

ROOT = Path(__file__).parents[1]


def _mmdtok(*args, cwd=None, env=None):
    result = run_mmdtok(*args, cwd=cwd, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


_refused = refused


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec") / "model"
    trained_codebooks("small-music").save_pretrained(folder)
    return folder


@pytest.fixture()
def audio(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        soundfile.write(folder / f"{i}.wav", notes(0.5, 24_000, seed=i).T.numpy(), 24_000)
    return folder


def _model_copy(model, tmp_path, name, config=None, weights=None):
    folder = tmp_path / name
    folder.mkdir()
    data = json.loads((model / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config(data) if config else data))
    (folder / "model.safetensors").write_bytes(
        weights if weights is not None else (model / "model.safetensors").read_bytes())
    return folder


def test_an_unusable_output_folder_is_refused_before_any_work(model, audio, tmp_path):
    (tmp_path / "a_file").write_text("mine")
    _refused(_mmdtok("encode", audio, "-o", tmp_path / "a_file", "--model", model),
             "a_file is a file")
    assert (tmp_path / "a_file").read_text() == "mine"
    # /proc/self exists as a folder and takes no new files, even for root
    _refused(_mmdtok("encode", audio, "-o", "/proc/self", "--model", model),
             "cannot write into the output folder /proc/self")
    _toy_tokens(tmp_path / "t.mmdtok")
    _refused(_mmdtok("decode", tmp_path, "-o", tmp_path / "a_file" / "sub"), "a_file")


def test_a_rerun_with_other_settings_refuses_to_keep_or_replace_silently(model, audio,
                                                                         tmp_path):
    tokens = tmp_path / "tok"
    assert _mmdtok("encode", audio, "-o", tokens, "--model", model).returncode == 0
    before = {p.name: p.read_bytes() for p in tokens.iterdir()}
    _refused(_mmdtok("encode", audio, "-o", tokens, "--model", model, "--n-q", "2"),
             "3 output file(s)", "4 codebooks", "this run writes 2", "--overwrite")
    other = tmp_path / "other"
    trained_codebooks("small-music", seed=1).save_pretrained(other)
    _refused(_mmdtok("encode", audio, "-o", tokens, "--model", other), "--overwrite")
    assert {p.name: p.read_bytes() for p in tokens.iterdir()} == before  # untouched
    same = _mmdtok("encode", audio, "-o", tokens, "--model", model)
    assert same.returncode == 0 and "0 encoded, 3 skipped" in same.stderr
    replaced = _mmdtok("encode", audio, "-o", tokens, "--model", model, "--n-q", "2",
                       "--overwrite")
    assert replaced.returncode == 0 and "3 encoded" in replaced.stderr
    assert {load_tokens(p).num_codebooks for p in tokens.glob("*.mmdtok")} == {2}


def test_decode_never_writes_over_audio_it_did_not_decode(model, audio, tmp_path):
    tokens = tmp_path / "tok"
    _mmdtok("encode", audio, "-o", tokens, "--model", model)
    originals = {p.name: p.read_bytes() for p in audio.iterdir()}
    for extra in ([], ["--overwrite"]):
        _refused(_mmdtok("decode", tokens, "-o", audio, *extra), "0.wav",
                 "not decoded by mmdtok", "another output folder")
    assert {p.name: p.read_bytes() for p in audio.iterdir()} == originals
    decoded = _mmdtok("decode", tokens, "-o", tmp_path / "dec")
    assert decoded.returncode == 0 and "3 decoded" in decoded.stderr
    assert f"codec: the folder {model.resolve()}, as recorded in the token files" in (
        decoded.stderr)
    again = _mmdtok("decode", tokens, "-o", tmp_path / "dec")
    assert "0 decoded, 3 skipped" in again.stderr
    forced = _mmdtok("decode", tokens, "-o", tmp_path / "dec", "--overwrite")
    assert forced.returncode == 0 and "3 decoded" in forced.stderr  # its own files


def test_a_device_this_torch_cannot_use_is_one_line(model, audio, tmp_path):
    count = torch.cuda.device_count()
    _refused(_mmdtok("encode", audio, "-o", tmp_path / "o", "--model", model, "--device",
                     f"cuda:{count + 7}"), f"--device cuda:{count + 7}")
    _refused(_mmdtok("encode", audio, "-o", tmp_path / "o", "--model", model, "--device",
                     "gpu0"), "not a torch device")
    assert not list((tmp_path / "o").glob("*.mmdtok"))


def test_damaged_model_folders_are_named_in_one_line(model, tmp_path):
    weights = (model / "model.safetensors").read_bytes()
    cases = {"pickled": pickle.dumps({"weights": [1, 2, 3]}), "truncated": weights[:1000],
             "empty": b""}
    for name, content in cases.items():
        folder = _model_copy(model, tmp_path, name, weights=content)
        _refused(_mmdtok("info", folder), f"{name}/model.safetensors",
                 "not a readable safetensors file")
    no_codec = _model_copy(model, tmp_path, "no_codec",
                           config=lambda d: {k: v for k, v in d.items() if k != "codec"})
    _refused(_mmdtok("info", no_codec), "no_codec/config.json", "lacks its 'codec'")

    def resized(data):
        data["codec"]["quantizer"]["codebook_size"] = 512
        return data
    line = _refused(_mmdtok("info", _model_copy(model, tmp_path, "resized", config=resized)),
                    "weights do not match the codec config", "is [1024], the config makes "
                    "[512]")
    assert len(line) < 400  # one line, not a dump of the state dict


def test_sizes_a_file_declares_are_bounded_before_allocation(model, tmp_path):
    def many(data):
        data["codec"]["quantizer"]["num_codebooks"] = 10**9
        return data
    _refused(_mmdtok("info", _model_copy(model, tmp_path, "many", config=many)),
             "num_codebooks must be an integer in 1..1,024", "many")
    base = TokenFile(codes=torch.zeros(4, 50, dtype=torch.long), codec="x",
                     codec_fingerprint="0", sample_rate=24_000, channels=1, frame_rate=75.0,
                     codebook_size=1024, length=16_000).metadata()

    def crafted(name, codebooks=4, **fields):
        path = tmp_path / f"{name}.mmdtok"
        save_file({"codes": torch.zeros(codebooks, 50, dtype=torch.int16)}, path,
                  metadata={**base, **fields})
        return path
    huge = crafted("huge", codebook_size=str(2**31 - 1))
    for command in ("info", "inspect"):
        _refused(_mmdtok(command, huge), "huge.mmdtok",
                 "codebook_size must be an integer in 1..1,048,576")
    _refused(_mmdtok("inspect", crafted("none", codebooks=0, num_codebooks="0")),
             "none.mmdtok", "num_codebooks")
    _refused(_mmdtok("info", crafted("rate0", sample_rate="0")), "rate0.mmdtok",
             "sample_rate must be an integer in 1..1,000,000, got 0")
    _refused(_mmdtok("info", crafted("word", sample_rate="abc")), "word.mmdtok",
             "'sample_rate' must be an integer, got 'abc'")


def _toy_tokens(path, frames=400):
    codes = torch.randint(0, 8, (2, frames), generator=torch.Generator().manual_seed(0))
    save_tokens(path, TokenFile(
        codes=codes, codec="toy", codec_fingerprint="0", sample_rate=24_000, channels=1,
        frame_rate=75.0, codebook_size=8, length=frames * 320))
    return path


def test_inspect_plots_into_new_folders_and_names_the_file_it_wrote(tmp_path):
    _toy_tokens(tmp_path / "a.mmdtok")
    nested = _mmdtok("inspect", tmp_path / "a.mmdtok", "--plot", tmp_path / "new" / "mi.png")
    assert nested.returncode == 0, nested.stderr
    assert (tmp_path / "new" / "mi.png").read_bytes()[:4] == b"\x89PNG"
    bare = _mmdtok("inspect", tmp_path / "a.mmdtok", "--plot", tmp_path / "base")
    assert f"heatmap written to {tmp_path / 'base.png'}" in bare.stderr
    assert (tmp_path / "base.png").exists() and not (tmp_path / "base").exists()


def test_input_paths_that_are_not_files_are_named_and_skips_are_warned(model, audio,
                                                                       tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    _refused(_mmdtok("encode", fifo, "-o", tmp_path / "o", "--model", model),
             "pipe.wav is not a regular file or folder (a FIFO)")
    os.mkfifo(audio / "inner.wav")
    (tmp_path / "linked").mkdir()
    soundfile.write(tmp_path / "linked" / "x.wav", notes(0.3, 24_000).T.numpy(), 24_000)
    (audio / "link").symlink_to(tmp_path / "linked", target_is_directory=True)
    result = _mmdtok("encode", audio, "-o", tmp_path / "o", "--model", model)
    assert result.returncode == 0 and "3 encoded" in result.stderr
    assert "inner.wav: not a regular file (a FIFO)" in result.stderr
    assert "link: a symbolic link to a folder is not followed" in result.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    _refused(_mmdtok("encode", audio, tmp_path / "empty", "-o", tmp_path / "o2", "--model",
                     model), "empty holds no audio file")
    assert not (tmp_path / "o2").exists()


def test_training_mistakes_name_the_setting(tmp_path):
    (tmp_path / "bad").mkdir()
    for name in ("a.wav", "b.flac"):
        (tmp_path / "bad" / name).write_text("not audio")
    _refused(_mmdtok("train-codec", tmp_path / "bad", "-o", tmp_path / "run", "--max-steps",
                     "1"), "every one of the 2 training audio files failed to load")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    settings = {"steps=abc": "steps must be an integer, got 'abc'",
                "quantizer=5": "quantizer must be an object",
                'weights={"l1":"x"}': "weights must be an object whose values are each a "
                                      "number",
                "segment_seconds=0": "segment_seconds must be a positive number"}
    for setting, message in settings.items():
        _refused(_mmdtok("train-codec", tmp_path / "bad", setting, "-o", tmp_path / "r2"),
                 message)
    (tmp_path / "settings.json").write_text("{not json")
    _refused(_mmdtok("train-codec", tmp_path / "bad", "-o", tmp_path / "r3", "--config",
                     tmp_path / "settings.json"), "settings.json is not valid JSON")


class Foreign:
    """A class a checkpoint can name but that loading must never instantiate."""


def test_checkpoints_with_the_wrong_content_are_refused_in_one_line(tmp_path):
    (tmp_path / "bad").mkdir()
    soundfile.write(tmp_path / "bad" / "a.wav", notes(0.3, 24_000).T.numpy(), 24_000)
    plain = tmp_path / "plain"
    (plain / "checkpoints").mkdir(parents=True)
    torch.save({"step": 3}, plain / "checkpoints" / "last.pt")
    _refused(_mmdtok("train-codec", tmp_path / "bad", "-o", plain, "--resume"),
             "not one of mmdtok's trainer")
    code = tmp_path / "code"
    (code / "checkpoints").mkdir(parents=True)
    torch.save({"object": Foreign()}, code / "checkpoints" / "last.pt")
    line = _refused(_mmdtok("train-codec", tmp_path / "bad", "-o", code, "--resume"),
                    "last.pt", "never unpickles code")
    assert "weights_only=False" not in line  # torch's advice is not repeated
