"""Atomic writes: complete or absent, never half-written, ordinary permissions."""

import os
import stat

import pytest

from mmdtok.atomic import atomic_path


def test_a_failed_write_leaves_neither_a_partial_file_nor_the_temporary(tmp_path):
    target = tmp_path / "out.mmdtok"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_a_finished_write_replaces_the_file_and_keeps_the_suffix_while_writing(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with atomic_path(target) as temp:
        assert temp.suffix == ".safetensors" and temp.parent == tmp_path and temp != target
        temp.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_permissions_of_a_plainly_created_file(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "model.safetensors") as temp:
            temp.write_bytes(b"x")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(os.stat(tmp_path / "model.safetensors").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o666 & ~umask
