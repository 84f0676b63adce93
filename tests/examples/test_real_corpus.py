"""The ``real`` recipe's parts on files made here (the Debian packages themselves are
not needed): licences from copyright files, archives, duplicates, short tracks, the
split rule, merging manifests."""

import importlib
import json
import zipfile

import soundfile

from mmdtok.testing import notes

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Source: http://example.org

Files: *
Copyright: someone
License: GPL-2+

Files:
 base/music/a.ogg
 base/music/b*.ogg
Copyright: a composer
License: CC-BY-3.0
 The licence text.

Files: debian/*
License: GPL-2+
"""


def _script():
    return importlib.import_module("examples.datasets.real_corpus")


def test_licences_follow_the_last_matching_stanza_of_a_dep5_file(tmp_path):
    script = _script()
    (tmp_path / "copyright").write_text(DEP5)
    stanzas = script.licences(tmp_path / "copyright")
    assert stanzas[1] == (["base/music/a.ogg", "base/music/b*.ogg"], "CC-BY-3.0")
    assert script.licence_of("/usr/share/games/x/base/music/a.ogg", stanzas) == "CC-BY-3.0"
    assert script.licence_of("/usr/share/games/x/base/music/b2.ogg", stanzas) == "CC-BY-3.0"
    assert script.licence_of("/usr/share/games/x/base/music/c.ogg", stanzas) == "GPL-2+"
    (tmp_path / "free").write_text("You may redistribute it under the terms of the GNU\n"
                                   "General Public License, version 2 or later.")
    assert script.licences(tmp_path / "free") == [(["*"], "GPL-2+")]


def test_tracks_from_files_and_archives_deduplicated_and_filtered(tmp_path, monkeypatch):
    script = _script()
    installed = tmp_path / "usr" / "share" / "game"
    installed.mkdir(parents=True)
    soundfile.write(installed / "long.ogg", notes(25.0, 22_050, seed=0).T.numpy(), 22_050)
    (installed / "copy.ogg").write_bytes((installed / "long.ogg").read_bytes())
    soundfile.write(installed / "jingle.ogg", notes(2.0, 22_050, seed=1).T.numpy(), 22_050)
    (installed / "tune.xm").write_bytes(b"Extended Module: not audio")
    soundfile.write(tmp_path / "inner.ogg", notes(21.0, 44_100, seed=2).T.numpy(), 44_100)
    with zipfile.ZipFile(installed / "music.pk3", "w") as archive:
        archive.write(tmp_path / "inner.ogg", "music/inner.ogg")
        archive.writestr("music/readme.txt", "not a track")
    monkeypatch.setattr(script, "PACKAGES", ("game-music",))
    monkeypatch.setattr(script, "installed_files",
                        lambda package: sorted(p for p in installed.iterdir()))
    (tmp_path / "doc" / "game-music").mkdir(parents=True)
    (tmp_path / "doc" / "game-music" / "copyright").write_text(DEP5)
    tracks, skipped = script.build(tmp_path / "out", min_seconds=20, doc_root=tmp_path / "doc")
    names = sorted(t.source.rsplit("/", 1)[1] for t in tracks)
    assert names == ["inner.ogg", "long.ogg"] or names == ["copy.ogg", "inner.ogg"]
    reasons = " | ".join(skipped)
    assert "the same file as" in reasons and "shorter than 20 s" in reasons
    assert "tracker module" in reasons
    inner = next(t for t in tracks if t.source.endswith("inner.ogg"))
    assert (tmp_path / "out" / "audio" / "game-music" / "music" / "music" / "inner.ogg"
            ).read_bytes() == (tmp_path / "inner.ogg").read_bytes()  # extracted as is
    assert inner.sample_rate == 44_100 and abs(inner.duration - 21.0) < 0.01
    assert inner.split == script.split_of(inner.source)
    lines = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    assert {line["license"] for line in lines} == {"GPL-2+"}
    assert {line["package"] for line in lines} == {"game-music"}


def test_merged_manifests_hold_absolute_paths(tmp_path):
    script = _script()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.jsonl").write_text(
        json.dumps({"path": "audio/train/x.flac", "split": "train"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"path": "/abs/y.ogg", "split": "test"}))
    assert script.merge([tmp_path / "a" / "manifest.jsonl", tmp_path / "b.jsonl"],
                        tmp_path / "mixed.jsonl") == 2
    paths = [json.loads(line)["path"] for line in (tmp_path / "mixed.jsonl").open()]
    assert paths == [str((tmp_path / "a" / "audio/train/x.flac").resolve()), "/abs/y.ogg"]
