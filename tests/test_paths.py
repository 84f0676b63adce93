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
