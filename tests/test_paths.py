"""The one finder of input files: files named directly, folders searched recursively."""

import pytest

from mmdtok.paths import find_files


def test_folders_are_searched_recursively_sorted_and_filtered_files_kept_as_named(tmp_path):
    for name in ("b/2.wav", "b/1.wav", "b/skip.txt", "a.wav", "c/deep/3.flac"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_files([tmp_path / "b", tmp_path / "c", tmp_path / "b" / "skip.txt"],
                       accept=lambda p: p.suffix in {".wav", ".flac"})
    assert [(f.path.relative_to(tmp_path).as_posix(), f.relative.as_posix()) for f in found] == [
        ("b/1.wav", "1.wav"), ("b/2.wav", "2.wav"), ("c/deep/3.flac", "deep/3.flac"),
        ("b/skip.txt", "skip.txt")]  # a file named directly is kept whatever its suffix


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder: .*missing"):
        find_files([tmp_path / "missing"], accept=lambda p: True)


def test_an_unreadable_subfolder_is_warned_about_and_the_rest_is_found(tmp_path,
                                                                       monkeypatch):
    import os

    for name in ("ok/1.wav", "ok/locked/2.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    real_scandir = os.scandir

    def scandir(path):  # what a folder without read permission does (root reads all)
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("mmdtok.paths.os.scandir", scandir)
    with pytest.warns(UserWarning, match=r"skipped the folder .*locked: Permission denied"):
        found = find_files([tmp_path / "ok"], accept=lambda p: p.suffix == ".wav")
    assert [f.relative.as_posix() for f in found] == ["1.wav"]


def test_a_folder_with_nothing_to_take_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="holds no audio file"):
        find_files([tmp_path], accept=lambda p: p.suffix == ".wav", kind="audio file")


def test_manifest_files_keep_the_folders_that_tell_equal_names_apart(tmp_path):
    import json

    from mmdtok.paths import manifest_files

    for folder in ("games/a/music", "games/b/music"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "track1.ogg").write_bytes(b"")
    lines = [{"path": str(tmp_path / "games/a/music/track1.ogg"), "split": "train"},
             {"path": "games/b/music/track1.ogg", "split": "test"}]  # relative to the manifest
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    found = manifest_files(tmp_path / "m.jsonl")
    assert [f.relative.as_posix() for f in found] == ["a/music/track1.ogg",
                                                      "b/music/track1.ogg"]
    assert [f.path for f in manifest_files(tmp_path / "m.jsonl", "test")] == [
        tmp_path / "games/b/music/track1.ogg"]
    with pytest.raises(ValueError, match=r"no entries of the split 'valid' \(its splits: "
                                         r"test, train\)"):
        manifest_files(tmp_path / "m.jsonl", "valid")
