from pathlib import Path

import pytest

from mmdtok.audio import is_audio_file
from mmdtok.folders import Report, Task, _isolate_failures, plan


def test_plan_mirrors_folders_and_places_single_files_at_the_top(tmp_path):
    for name in ["a/x.wav", "a/sub/y.FLAC", "a/notes.txt", "z.mp3"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    tasks = plan([tmp_path / "a", tmp_path / "z.mp3"], tmp_path / "out",
                 accept=is_audio_file, suffix=".mmdtok")
    targets = [t.target.relative_to(tmp_path / "out").as_posix() for t in tasks]
    assert targets == ["sub/y.mmdtok", "x.mmdtok", "z.mmdtok"]


def test_plan_refuses_missing_inputs_and_colliding_outputs(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        plan([tmp_path / "missing"], tmp_path, accept=is_audio_file, suffix=".mmdtok")
    for name in ["one/x.wav", "two/x.flac"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="would both be written"):
        plan([tmp_path / "one", tmp_path / "two"], tmp_path / "out", accept=is_audio_file,
             suffix=".mmdtok")


def test_a_failing_batch_is_retried_item_by_item_so_one_bad_input_fails_alone():
    items = [(Task(Path(f"{i}.wav"), Path(f"{i}.mmdtok")), i) for i in range(5)]
    calls = []

    def run(batch):
        calls.append(len(batch))
        if any(value == 3 for _, value in batch):
            raise RuntimeError("out of memory on item 3")
        return [value * 10 for _, value in batch]

    report, seen = Report(), []
    done = _isolate_failures(run, items, report, lambda task, status: seen.append(status))
    assert [(item[1], out) for item, out in done] == [(0, 0), (1, 10), (2, 20), (4, 40)]
    assert report.failed == [(Path("3.wav"), "out of memory on item 3")]
    assert seen == ["failed"] and calls == [5, 1, 1, 1, 1, 1]


def test_a_full_disk_fails_one_file_leaves_nothing_partial_and_the_others_go_on(tmp_path,
                                                                               monkeypatch):
    import errno

    import safetensors.torch
    import soundfile

    from mmdtok.folders import encode_files
    from mmdtok.testing import notes, trained_codebooks
    from mmdtok.tokens import load_tokens

    for i in range(3):
        soundfile.write(tmp_path / f"{i}.wav", notes(0.3, 24_000, seed=i).T.numpy(), 24_000)
    tasks = plan([tmp_path], tmp_path / "tok", accept=is_audio_file, suffix=".mmdtok")
    real_save = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if ".1." in Path(filename).name:  # the temporary of 1.mmdtok: half written, then
            Path(filename).write_bytes(b"\0" * 100)  # the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    report = encode_files(trained_codebooks("small-music"), tasks, batch_size=3)
    assert [p.name for p in report.written] == ["0.mmdtok", "2.mmdtok"]
    assert report.failed == [(tmp_path / "1.wav",
                              f"cannot write {tmp_path / 'tok' / '1.mmdtok'}: the disk is "
                              "full (no space left on the device)")]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["0.mmdtok", "2.mmdtok"]
    assert load_tokens(tmp_path / "tok" / "2.mmdtok").num_frames == 23
