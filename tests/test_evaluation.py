"""``mmdtok evaluate``: metrics with known answers, delay compensation, the classical
baselines through each engine this machine has, the command as a real process."""

import json
from pathlib import Path

import pytest
import soundfile
import torch

from mmdtok import evaluation as ev
from mmdtok.testing import notes, trained_codebooks
from tests.cli_processes import run_mmdtok

ROOT = Path(__file__).parents[1]


def _orthogonal_noise(x: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    """Noise orthogonal to the (zero-mean) signal at exactly ``snr_db``."""
    x = x.double() - x.double().mean()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
    noise = noise - noise.mean()
    noise = noise - (noise * x).sum() / (x * x).sum() * x
    return noise * (x.pow(2).sum() / noise.pow(2).sum() / 10 ** (snr_db / 10)).sqrt()


def test_si_sdr_of_a_known_distortion_and_gain_is_known():
    x = notes(2.0, 24_000, seed=1).double()
    x = x - x.mean()
    for snr in (0.0, 10.0, 25.0):
        degraded = x + _orthogonal_noise(x, snr)
        for gain in (1.0, 0.3):
            value = ev.scores(gain * degraded, x, 24_000, with_visqol=False)["si_sdr"]
            assert value == pytest.approx(snr, abs=0.01)


def test_an_identical_signal_scores_as_perfect_and_noise_scores_worse():
    x = notes(3.0, 24_000, seed=0)
    perfect = ev.scores(x, x, 24_000)
    assert perfect["si_sdr"] > 60
    assert perfect["mel_distance"] == pytest.approx(0, abs=1e-6)
    assert perfect["stft_distance"] == pytest.approx(0, abs=1e-9)
    assert perfect["visqol"] > 4.5  # ViSQOL v3 audio mode tops out near 4.73
    noisy = ev.scores(x + _orthogonal_noise(x, 5.0).float(), x, 24_000)
    assert noisy["visqol"] < perfect["visqol"] - 1
    assert noisy["mel_distance"] > 0.1 and noisy["stft_distance"] > 0.1


@pytest.mark.parametrize("lag", [0, 37, -120, 2399])
def test_align_undoes_a_known_delay(lag):
    x = notes(1.0, 24_000, seed=3)
    shifted = (torch.nn.functional.pad(x, (lag, 0))[:, : x.shape[-1]] if lag >= 0
               else torch.nn.functional.pad(x[:, -lag:], (0, -lag)))
    aligned, found = ev.align(shifted, x, max_lag=2_400)
    assert found == lag and aligned.shape == x.shape
    inner = slice(abs(lag), x.shape[-1] - abs(lag))
    assert torch.equal(aligned[:, inner], x[:, inner])


def test_baselines_parse_and_bad_ones_are_named():
    assert ev.parse_baselines("opus:6,12 mp3:64") == [
        ev.Baseline("opus", 6), ev.Baseline("opus", 12), ev.Baseline("mp3", 64)]
    assert ev.parse_baselines("") == []
    for bad, words in (("aac:64", "KIND:KBPS"), ("opus:fast", "'fast' is not a bitrate"),
                       ("opus:0.1", "out of 0.5..512")):
        with pytest.raises(ValueError, match=words):
            ev.parse_baselines(bad)


def _engines():
    """PyAV (a dev dependency) always; the system's programs where installed."""
    found = ["pyav"]
    if all(map(__import__("shutil").which, ("opusenc", "opusdec"))):
        found.append("programs")
    return found


@pytest.mark.parametrize("engine", _engines())
def test_opus_through_each_engine_keeps_the_length_and_more_bits_score_better(engine,
                                                                               monkeypatch):
    monkeypatch.setattr(ev.Baseline, "engine", lambda self: engine)
    x = notes(3.0, 24_000, seed=0)
    results = {}
    for kbps in (6, 24):
        out = ev.Baseline("opus", kbps).roundtrip(x, 24_000)
        assert out.shape == x.shape and torch.isfinite(out).all()
        results[kbps] = ev.scores(out, x, 24_000, with_visqol=False)
    assert results[24]["si_sdr"] > results[6]["si_sdr"] + 3
    assert results[24]["si_sdr"] > 8  # aligned: a delay of even one sample costs far more
    assert results[24]["stft_distance"] < results[6]["stft_distance"]


def test_without_any_engine_the_rows_are_skipped_with_a_note(monkeypatch, tmp_path):
    monkeypatch.setattr(ev.Baseline, "engine", lambda self: None)
    soundfile.write(tmp_path / "a.wav", notes(1.0, 24_000).T.numpy(), 24_000)
    report = ev.evaluate(trained_codebooks("small-music"), [tmp_path], n_q=[4],
                         baselines=ev.parse_baselines("opus:6"), with_visqol=False)
    assert [row.system for row in report.rows] == ["small-music, 4 codebooks"]
    assert report.notes == ["opus 6 kbps: skipped, neither opusenc and opusdec nor PyAV is "
                            "installed (apt-get install opus-tools / ffmpeg, or pip install "
                            "av)"]


def test_evaluate_scores_every_bitrate_and_fails_a_bad_file_alone(tmp_path):
    from mmdtok import Codec

    for excerpt in sorted((ROOT / "examples" / "audio").glob("*.flac")):
        audio, rate = soundfile.read(excerpt)
        soundfile.write(tmp_path / f"{excerpt.stem}.wav", audio[: 4 * rate], rate)
    (tmp_path / "broken.wav").write_text("not audio")
    report = ev.evaluate(Codec.bundled(), [tmp_path], with_visqol=False)
    assert [row.kbps for row in report.rows] == [0.75, 1.5, 2.25, 3.0]
    assert [Path(p).name for p, _ in report.failed] == ["broken.wav"]
    first, last = report.rows[0].summary(), report.rows[-1].summary()
    assert last["mel_distance"]["mean"] < first["mel_distance"]["mean"]  # more codebooks,
    assert last["si_sdr"]["mean"] > first["si_sdr"]["mean"] + 1  # closer to the original
    assert all(len(row.files) == 2 for row in report.rows)
    assert report.rows[0].summary()["visqol"] is None
    excerpt = ev.evaluate(Codec.bundled(), [tmp_path / "bach_bwv154.3_woodwinds.wav"],
                          n_q=[4], seconds=1.0, with_visqol=False)
    whole = report.rows[-1].values["si_sdr"][0]
    assert excerpt.rows[0].values["si_sdr"][0] != whole  # another, shorter reference


def test_the_command_prints_the_table_and_writes_json(tmp_path):
    model = tmp_path / "model"
    trained_codebooks("small-music").save_pretrained(model)
    soundfile.write(tmp_path / "a.wav", notes(1.5, 24_000).T.numpy(), 24_000)
    command = ["evaluate", tmp_path / "a.wav", "--model", model, "--n-q", "2", "--n-q", "4",
               "--baseline", "opus:12", "--json", tmp_path / "out" / "scores.json"]
    result = run_mmdtok(*command, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 file(s); mean ± standard deviation over files"
    assert lines[2].startswith(f"{model}, 2 codebooks") and "1.50" in lines[2]
    assert lines[4].startswith("opus 12 kbps (")
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [row["kbps"] for row in data["rows"]] == [1.5, 3.0, 12.0]
    assert data["rows"][2]["summary"]["visqol"]["mean"] > 1.0
    bad = run_mmdtok(*command[:4], "--baseline", "aac:64")
    assert bad.returncode == 2 and "aac:64" in bad.stderr and "Traceback" not in bad.stderr


def test_manifests_give_their_entries_of_the_split_asked_for(tmp_path):
    from mmdtok import Codec

    for name in ("a", "b", "c"):
        soundfile.write(tmp_path / f"{name}.wav", notes(0.5, 24_000).T.numpy(), 24_000)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"path": "a.wav", "split": "test"}\n\n'
                        f'{{"path": "{tmp_path / "b.wav"}", "split": "train"}}\n'
                        '{"path": "c.wav", "split": "test"}\n')
    assert ev.reference_files([manifest], "test") == [tmp_path / "a.wav", tmp_path / "c.wav"]
    assert ev.reference_files([manifest, tmp_path / "b.wav"], "train") == [
        tmp_path / "b.wav", tmp_path / "b.wav"]  # files named directly are all taken
    assert len(ev.reference_files([manifest])) == 3
    report = ev.evaluate(Codec.bundled(), [manifest], n_q=[4], split="test",
                         with_visqol=False)
    assert sorted(Path(p).name for p in report.rows[0].files) == ["a.wav", "c.wav"]
    with pytest.raises(ValueError, match="split 'valid'"):
        ev.evaluate(Codec.bundled(), [manifest], split="valid", with_visqol=False)
    # the command line: the split's two files scored (the README's command)
    result = run_mmdtok("evaluate", manifest, "--split", "test", "--n-q", "4",
                        "--no-visqol", "--baseline", "", timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("2 file(s)")
    (tmp_path / "bad.jsonl").write_text('{"file": "a.wav"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        ev.reference_files([tmp_path / "bad.jsonl"])
