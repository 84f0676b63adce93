"""Atomic writes: complete or absent, never half-written, ordinary permissions."""

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdtok.atomic import atomic_path
from tests.cli_processes import run_python


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


KILLED_WRITER = """
import os, sys
from mmdtok.atomic import atomic_path
with atomic_path(sys.argv[1]) as temp:
    temp.write_text("half")
    os._exit(9)  # killed between the temporary file and the rename
"""


def _killed_write(target):
    """A process of its own (forked with mmdtok imported: :mod:`tests.cli_processes`)
    that dies between writing the temporary file and renaming it."""
    done = run_python(KILLED_WRITER, target, timeout=60)
    assert done.returncode == 9, done.stderr


def test_a_killed_write_leaves_a_temporary_that_is_never_read_and_is_removed_on_rerun(
        tmp_path):
    from mmdtok.atomic import is_temporary
    from mmdtok.paths import find_files

    target = tmp_path / "song.mmdtok"
    _killed_write(target)
    (left,) = tmp_path.iterdir()
    assert is_temporary(left) and not target.exists()
    (tmp_path / "other.mmdtok").write_text("complete")
    assert [f.path.name for f in find_files([tmp_path], lambda p: True)] == ["other.mmdtok"]
    with atomic_path(target) as temp:  # the rerun of the same write
        temp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mmdtok", "song.mmdtok"]


def test_only_the_temporaries_of_the_target_itself_are_removed(tmp_path):
    _killed_write(tmp_path / "a.mmdtok")
    _killed_write(tmp_path / "ab.mmdtok")
    _killed_write(tmp_path / "a.wav")
    _killed_write(tmp_path / "a.b.mmdtok")  # ".a.b.XXXXXXXX.part.mmdtok": not a.mmdtok's
    with atomic_path(tmp_path / "a.mmdtok") as temp:
        temp.write_text("x")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "a.mmdtok" in names and len(names) == 4  # the three others' are kept
    assert not any(n.startswith(".a.") and n.endswith(".mmdtok") and n.count(".") == 4
                   for n in names)


@given(stem=st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=20),
       suffix=st.sampled_from(["", ".mmdtok", ".wav", ".pt", ".safetensors"]))
def test_temporary_names_are_recognized_and_ordinary_names_are_not(stem, suffix):
    from pathlib import Path

    from mmdtok.atomic import is_temporary

    if stem in {".", ".."}:
        return
    target = Path("/folder") / f"{stem}{suffix}"
    temp = target.with_name(f".{target.stem}.0123abcd.part{target.suffix}")
    assert is_temporary(temp)
    assert not is_temporary(Path("/folder") / "song.mmdtok")
    assert not is_temporary(Path("/folder") / ".hidden.mmdtok")
    assert not is_temporary(Path("/folder") / "take.part.wav")  # a user's own name
