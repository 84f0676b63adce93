"""Model folders, the Hugging Face cache layout, offline mode and unreachable Hubs
(huggingface_hub for real, against local folders and a closed local port)."""

import shutil
import time

import pytest
import torch

from mmdtok import Codec
from mmdtok.hub import ModelNotFoundError
from mmdtok.testing import notes, trained_codebooks

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLOSED_PORT = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    codec = trained_codebooks("small-music")
    folder = codec.save_pretrained(tmp_path_factory.mktemp("model") / "run")
    return codec, folder


def _cache(tmp_path, folder, repo="owner/codec", commit=COMMIT, ref="main"):
    """The standard Hub cache layout: refs/<ref> names a commit whose snapshot holds
    the files."""
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return tmp_path / "hub"


def test_a_saved_folder_loads_back_with_the_same_codes_and_weights(saved):
    codec, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = Codec.from_pretrained(folder)
    audio = notes(1.0, codec.sample_rate, seed=5)[None]
    assert torch.equal(loaded.encode(audio), codec.encode(audio))
    assert loaded.fingerprint() == codec.fingerprint() and loaded.config == codec.config
    assert not loaded.training and loaded.origin == str(folder.resolve())


def test_the_saved_files_get_the_permissions_of_plainly_created_ones(saved, tmp_path):
    _, folder = saved
    plain = tmp_path / "plain"
    plain.write_text("")
    for name in ("config.json", "model.safetensors"):
        assert (folder / name).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, name


def test_weight_norm_survives_a_round_trip_for_training(tmp_path):
    codec = Codec.from_preset("small-music")
    codec.save_pretrained(tmp_path)
    trainable = Codec.from_pretrained(tmp_path, inference=False)
    assert trainable.training
    assert hasattr(trainable.encoder.layers[0].conv, "parametrizations")
    assert trainable.fingerprint() == codec.fingerprint()


def test_the_cache_layout_is_read_offline_by_branch_and_by_commit(saved, tmp_path, monkeypatch):
    codec, folder = saved
    cache = _cache(tmp_path, folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_branch = Codec.from_pretrained("owner/codec", cache_dir=cache)
    by_commit = Codec.from_pretrained("owner/codec", revision=COMMIT, cache_dir=cache)
    assert by_branch.fingerprint() == by_commit.fingerprint() == codec.fingerprint()
    assert by_branch.origin == f"owner/codec@{COMMIT}"
    with pytest.raises(ModelNotFoundError, match="offline mode is on"):
        Codec.from_pretrained("owner/codec", revision="v2", cache_dir=cache)


# slow tier: huggingface_hub retries a refused connection five times with backoff (23 s) before it gives up
@pytest.mark.slow
def test_an_unreachable_hub_without_a_cached_copy_says_so(tmp_path):
    with pytest.raises(ModelNotFoundError, match="could not be reached and it is not in the "
                                                 "cache"):
        Codec.from_pretrained("owner/absent", cache_dir=tmp_path, endpoint=CLOSED_PORT)


def test_a_cached_copy_is_used_when_offline_is_asked_per_call(saved, tmp_path):
    codec, folder = saved
    cache = _cache(tmp_path, folder, repo="owner/other")
    loaded = Codec.from_pretrained("owner/other", cache_dir=cache, local_files_only=True)
    assert loaded.fingerprint() == codec.fingerprint()


def test_names_that_are_neither_folders_nor_repo_ids_are_refused(saved, tmp_path,
                                                                 monkeypatch):
    _, folder = saved
    with pytest.raises(ModelNotFoundError, match="not a Hub repository id"):
        Codec.from_pretrained(tmp_path / "missing" / "deeper" / "folder")
    with pytest.raises(ValueError, match="revisions only apply"):
        Codec.from_pretrained(folder, revision="main")
    # Paths of this machine are never tried on the Hub (no retries against an endpoint
    # that does not answer): a file's suffix, or an existing folder as the "owner".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for name in ("dir/missing.mmdtok", "songs/take.wav", "sub/absent"):
        started = time.monotonic()
        with pytest.raises(ModelNotFoundError, match="no such file or model folder"):
            Codec.from_pretrained(name, endpoint=CLOSED_PORT, cache_dir=tmp_path / "c")
        assert time.monotonic() - started < 2.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="is not a model folder"):
        Codec.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "bert"}')
    shutil.copy(folder / "model.safetensors", tmp_path / "empty")
    with pytest.raises(ValueError, match="neither an mmdtok codec"):
        Codec.from_pretrained(tmp_path / "empty")


def test_a_newer_format_version_asks_for_an_upgrade(saved, tmp_path):
    _, folder = saved
    shutil.copytree(folder, tmp_path / "m")
    config = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(config.replace('"format_version": 2',
                                                               '"format_version": 99'))
    with pytest.raises(ValueError, match="upgrade mmdtok"):
        Codec.from_pretrained(tmp_path / "m")


def test_push_to_hub_reports_offline_mode_and_unreachable_hubs(saved, monkeypatch):
    codec, _ = saved
    with pytest.raises(RuntimeError, match="pushing to owner/codec failed"):
        codec.push_to_hub("owner/codec", endpoint=CLOSED_PORT, token="hf_fake")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline mode"):
        codec.push_to_hub("owner/codec")


def test_decode_names_the_recorded_hub_codec_and_offline_contacts_nothing(saved, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from mmdtok.tokens import save_tokens, token_file

    codec, folder = saved
    cache = _cache(tmp_path, folder)
    hub_codec = Codec.from_pretrained("owner/codec", cache_dir=cache, local_files_only=True)
    audio = notes(0.5, codec.sample_rate, seed=2)[None]
    with torch.inference_mode():
        save_tokens(tmp_path / "tok" / "a.mmdtok",
                    token_file(hub_codec, hub_codec.encode(audio)[0], audio.shape[-1]))
    # A Hub endpoint: the kernel queues whoever connects, and an accept afterwards finds them
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "mmdtok", "decode", str(tmp_path / "tok"),
                             "-o", str(tmp_path / "dec")], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    try:
        server.accept()
        contacted = True
    except BlockingIOError:
        contacted = False
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert (f"codec: owner/codec at revision {COMMIT} from the local Hugging Face cache only "
            "(offline), as recorded in the token files") in result.stderr
    assert (tmp_path / "dec" / "a.wav").exists() and not contacted
