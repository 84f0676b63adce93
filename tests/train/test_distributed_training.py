"""train-codec under torchrun: 2 gloo processes on CPU train with DDP and the independence
loss, and end with identical weights, codebooks and discriminators."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdtok import Codec

ROOT = Path(__file__).parents[2]
WORKER = ROOT / "tests" / "workers" / "train_codec.py"

pytestmark = pytest.mark.slow  # slow tier: torchrun runs, each a training of its own


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_ranks_end_with_identical_weights_and_codebooks(tiny_corpus, tmp_path):
    manifest = tiny_corpus[0] / "manifest.jsonl"
    _torchrun(str(WORKER), str(manifest), str(tmp_path / "run"), str(tmp_path / "state"),
              cwd=tmp_path)
    rank0 = torch.load(tmp_path / "state.rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "state.rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
    assert len(rank0["independence"]) == 2  # macro-batches at steps 2 and 4, over both ranks
    assert any(k.endswith("codebook") or "embed" in k for k in rank0), "codebooks compared"
    torch.manual_seed(0)
    fresh = Codec.from_preset("small-music").state_dict()
    changed = [k for k, v in fresh.items() if v.is_floating_point()
               and not torch.equal(v, rank0[f"codec.{k}"])]
    assert len(changed) > len(fresh) // 2, "the ranks must have trained"
    exported = Codec.from_pretrained(tmp_path / "run", inference=False).state_dict()
    for key, value in exported.items():
        assert torch.equal(value, rank0[f"ema.{key}"]), f"exported {key} is not rank 0's EMA"


def test_the_command_line_trains_under_torchrun(tiny_corpus, tmp_path):
    folder = tiny_corpus[0] / "audio"  # split by path hash: 2 train, 3 valid files
    result = _torchrun("-m", "mmdtok", "train-codec", str(folder), "-o", str(tmp_path / "run"),
                       "steps=2", "batch_size=1", "segment_seconds=0.25", "valid_fraction=0.5",
                       "discriminator_filters=4", "valid_every=2", "valid_seconds=0.5",
                       "valid_files=1", cwd=tmp_path)
    assert result.stderr.count("trained to step 2") == 1  # rank 0 reports, once
    assert Codec.from_pretrained(tmp_path / "run").config.name == "small-music"
    assert len((tmp_path / "run" / "validation.jsonl").read_text().splitlines()) == 1
