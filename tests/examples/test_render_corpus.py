"""The corpus recipe renders real music reproducibly."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import soundfile

from tests.examples.corpus import available_renderer, load_script, require_renderer


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.flac"))}


def test_the_manifest_lists_every_file_with_its_duration_source_and_split(tiny_corpus):
    folder, pieces = tiny_corpus
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len(pieces) == 5
    for entry in lines:
        info = soundfile.info(folder / entry["path"])
        assert info.samplerate == 24_000 and info.channels == 1
        assert entry["duration"] == pytest.approx(info.frames / 24_000)
        assert 5.0 < entry["duration"] <= 13.0
        assert entry["source"].startswith("music21:bach/")
        assert entry["split"] in {"train", "valid", "test"}
        assert f"/{entry['split']}/" in f"/{entry['path']}"


def test_files_are_peak_normalized_music_not_tones(tiny_corpus):
    folder, pieces = tiny_corpus
    for piece in pieces:
        audio, rate = soundfile.read(folder / piece.path, dtype="float32")
        assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)
        # Polyphony: in a one-second frame, many spectral peaks carry energy.
        frame = audio[rate : 2 * rate] * np.hanning(rate)
        spectrum = np.abs(np.fft.rfft(frame))
        strong = spectrum > 0.05 * spectrum.max()
        assert strong.sum() > 20
        assert np.sqrt(np.mean(audio**2)) > 0.02


# slow tier: renders the corpus a second time
@pytest.mark.slow
def test_rendering_again_gives_identical_files(tiny_corpus, tmp_path):
    folder, _ = tiny_corpus
    script = load_script()
    script.render(script.RECIPES["tiny"], tmp_path, renderer=require_renderer(), jobs=1,
                  progress=False)
    assert _digest(tmp_path) == _digest(folder)
    listed = {json.loads(line)["path"] for line in (folder / "manifest.jsonl").read_text()
              .splitlines()}
    assert set(_digest(folder)) == listed  # no file outside the manifest
    assert (tmp_path / "manifest.jsonl").read_text() == (folder / "manifest.jsonl").read_text()


def test_the_split_depends_only_on_the_piece_and_the_seed():
    script = load_script()
    names = [f"collection/piece{i}.mxl" for i in range(4000)]
    splits = Counter(script.split_of(n, 0) for n in names)
    assert 0.88 < splits["train"] / 4000 < 0.92
    assert 0.035 < splits["test"] / 4000 < 0.065 and 0.035 < splits["valid"] / 4000 < 0.065
    assert [script.split_of(n, 0) for n in names[:50]] == [script.split_of(n, 0)
                                                          for n in names[:50]]
    assert [script.split_of(n, 1) for n in names] != [script.split_of(n, 0) for n in names]


def test_every_renderer_available_here_renders_a_piece(tmp_path):
    script = load_script()
    recipe = script.Recipe(pieces=1, collections=("bach",), max_seconds=4.0)
    source = script.candidates(recipe)[0]
    for renderer in sorted(script.RENDERERS):
        try:
            result = script.render_piece((source, recipe, renderer, str(tmp_path / renderer)))
            if not isinstance(result, str):
                script._partial(tmp_path / renderer / result.path).replace(
                    tmp_path / renderer / result.path)
        except ImportError:
            assert renderer == "tinysoundfont"  # the optional one
            continue
        except RuntimeError as error:  # a missing program is not a bad score: never skipped
            assert renderer == "timidity" and "not installed" in str(error)
            continue
        assert not isinstance(result, str), result
        audio, _ = soundfile.read(tmp_path / renderer / result.path)
        assert 4.0 < len(audio) / 24_000 <= 5.0
    assert available_renderer() in script.RENDERERS


def test_additive_synthesis_renders_the_score_deterministically_with_numpy_only(tmp_path):
    script = load_script()
    recipe = script.Recipe(pieces=1, collections=("bach",), max_seconds=4.0)
    source = script.candidates(recipe)[0]
    digests = []
    for attempt in ("a", "b"):
        result = script.render_piece((source, recipe, "additive", str(tmp_path / attempt)))
        assert not isinstance(result, str), result
        path = script._partial(tmp_path / attempt / result.path)
        audio, rate = soundfile.read(path, dtype="float32")
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)
        frame = audio[rate : 2 * rate] * np.hanning(rate)
        spectrum = np.abs(np.fft.rfft(frame))
        assert (spectrum > 0.05 * spectrum.max()).sum() > 20  # chords with harmonics
    assert digests[0] == digests[1]


def test_a_bad_score_or_render_skips_the_piece_and_a_programming_error_stops(tmp_path,
                                                                            monkeypatch):
    import subprocess

    script = load_script()
    recipe = script.Recipe(pieces=1, collections=("bach",), max_seconds=2.0)
    source = script.candidates(recipe)[0]

    def failing(error):
        def render(midi_path, sample_rate, timeout):
            raise error
        return render

    monkeypatch.setitem(script.RENDERERS, "crashing", failing(
        subprocess.CalledProcessError(1, ["renderer"])))
    skipped = script.render_piece((source, recipe, "crashing", str(tmp_path)))
    assert isinstance(skipped, str) and "CalledProcessError" in skipped
    assert source in skipped
    for error in (AttributeError("a bug"), OSError(28, "No space left on device")):
        monkeypatch.setitem(script.RENDERERS, "crashing", failing(error))
        with pytest.raises(type(error)):
            script.render_piece((source, recipe, "crashing", str(tmp_path)))
