import logging

import numpy as np
import pytest
import soundfile
import torch

from mmdtok.train.data import ClipSampler, find_audio


def test_manifests_keep_their_splits_and_folders_split_by_path(tiny_corpus, tmp_path):
    folder, pieces = tiny_corpus
    listed = find_audio([folder / "manifest.jsonl"])
    assert sorted(f.path.name for f in listed) == sorted(p.path.split("/")[-1] for p in pieces)
    assert [f.split for f in listed] == [p.split for p in sorted(pieces, key=lambda p: p.path)]
    found = find_audio([folder], valid_fraction=0.5)
    assert len(found) == len(pieces) and {f.split for f in found} <= {"train", "valid"}
    assert found == find_audio([folder], valid_fraction=0.5)
    with pytest.raises(ValueError, match="no such folder or manifest"):
        find_audio([tmp_path / "missing"])
    (tmp_path / "bad.jsonl").write_text('{"file": "x.wav"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        find_audio([tmp_path / "bad.jsonl"])


def test_batches_depend_only_on_seed_step_and_rank(tiny_corpus):
    folder, _ = tiny_corpus
    files = find_audio([folder / "manifest.jsonl"])
    make = lambda rank=0: ClipSampler(files, sample_rate=16_000, channels=1,
                                      segment=8_000, batch_size=3, seed=7, rank=rank)
    a, b = make(), make()
    first = a.batch(5)
    assert first.shape == (3, 1, 8_000)
    assert torch.equal(first, b.batch(5))
    assert not torch.equal(first, a.batch(6)) and not torch.equal(first, make(1).batch(5))
    assert (first.pow(2).mean(dim=-1) > 1e-4).all()  # crops of music, not silence


def test_unreadable_files_are_logged_and_skipped(tiny_corpus, tmp_path, caplog):
    folder, _ = tiny_corpus
    files = find_audio([folder / "manifest.jsonl"])
    (tmp_path / "broken.wav").write_text("nope")
    short = tmp_path / "short.wav"
    soundfile.write(short, np.full((100, 2), 0.5, dtype=np.float32), 8_000)
    all_files = files + find_audio([tmp_path], valid_fraction=0.0)
    sampler = ClipSampler(all_files, sample_rate=24_000, channels=1, segment=2_400,
                          batch_size=4, seed=0)
    with caplog.at_level(logging.WARNING):
        for step in range(20):
            assert sampler.batch(step).shape == (4, 1, 2_400)
    assert list(sampler.bad) == [tmp_path / "broken.wav"]
    assert "Format not recognised" in sampler.bad[tmp_path / "broken.wav"]
    assert "skipping" in caplog.text
    padded = sampler.crop(short, 0.0)  # 100 samples at 8 kHz -> 300 at 24 kHz, then zeros
    assert padded[0, :250].abs().min() > 0.4 and padded[0, 400:].abs().max() == 0
    only_bad = ClipSampler(find_audio([tmp_path], valid_fraction=0.0)[:1], sample_rate=8_000,
                           channels=1, segment=10, batch_size=1)
    with pytest.raises(ValueError, match="every one of the 1 training audio files failed "
                                         "to load, e.g. .*broken.wav"):
        only_bad.batch(0)


def test_duration_sampling_draws_files_in_proportion_to_their_length(tmp_path):
    rate, lengths = 8_000, {"long.wav": 9.0, "short.wav": 1.0, "empty-ish.wav": 0.25}
    for name, seconds in lengths.items():
        soundfile.write(tmp_path / name, np.full((int(seconds * rate), 1), 0.1, "float32"),
                        rate)
    manifest = tmp_path / "manifest.jsonl"
    # one duration from the manifest, the others read from the files
    manifest.write_text('{"path": "long.wav", "split": "train", "duration": 9.0}\n'
                        '{"path": "short.wav", "split": "train"}\n'
                        '{"path": "empty-ish.wav", "split": "train", "duration": "x"}\n')
    files = find_audio([manifest])
    assert [f.duration for f in files] == [9.0, None, None]
    assert [f.seconds() for f in files] == [9.0, 1.0, 0.25]
    by_duration = ClipSampler(files, sample_rate=rate, channels=1, segment=80,
                              batch_size=1, sampling="duration")
    uniform = ClipSampler(files, sample_rate=rate, channels=1, segment=80, batch_size=1)
    rng = np.random.default_rng(0)
    drawn = np.bincount([by_duration._draw(rng) for _ in range(20_000)], minlength=3) / 20_000
    np.testing.assert_allclose(drawn, np.array([9.0, 1.0, 0.25]) / 10.25, atol=0.01)
    flat = np.bincount([uniform._draw(rng) for _ in range(20_000)], minlength=3) / 20_000
    np.testing.assert_allclose(flat, np.full(3, 1 / 3), atol=0.015)
    with pytest.raises(ValueError, match="sampling must be one of"):
        ClipSampler(files, sample_rate=rate, channels=1, segment=80, batch_size=1,
                    sampling="hours")
    (tmp_path / "zero.jsonl").write_text('{"path": "long.wav", "duration": 0}\n')
    with pytest.raises(ValueError, match="known, positive duration"):
        ClipSampler(find_audio([tmp_path / "zero.jsonl"]), sample_rate=rate, channels=1,
                    segment=80, batch_size=1, sampling="duration")
