"""encode / decode / info / evaluate with a codec whose bottleneck is continuous: latent
files (.mmdlat) in place of token files, on real audio files."""

import re

import pytest
import soundfile
import torch
from typer.testing import CliRunner

from mmdtok import Codec
from mmdtok.cli import app
from mmdtok.testing import notes, tiny_vae, trained_codebooks
from mmdtok.tokens import LatentFile, load_latents, load_tokens, save_latents


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_vae(seed=2).save_pretrained(root / "vae")
    trained_codebooks("small-music").save_pretrained(root / "rvq")
    return root


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _audio(folder):
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "a.wav", notes(1.3, 22_050, channels=2).T.numpy(), 22_050)
    soundfile.write(folder / "b.flac", notes(0.6, 16_000, seed=1, channels=2).T.numpy(), 16_000)
    return folder


def test_encode_writes_latent_files_that_decode_and_describe_themselves(models, tmp_path):
    audio = _audio(tmp_path / "in")
    result = _invoke("encode", audio, "-o", tmp_path / "lat", "--model", models / "vae")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == ["a.mmdlat", "b.mmdlat"]
    latents = load_latents(tmp_path / "lat" / "a.mmdlat")
    codec = Codec.from_pretrained(models / "vae")
    assert latents.dtype == "float16" and latents.latent_dim == 16
    assert latents.codec_fingerprint == codec.fingerprint() and latents.length == 16_000 * 1.3
    info = _invoke("info", tmp_path / "lat" / "a.mmdlat")
    assert "16 channels (float16)" in info.output and "codebooks" not in info.output
    model_info = _invoke("info", models / "vae")
    assert "continuous (vae), 4 group(s) of 4" in model_info.output

    decoded = _invoke("decode", tmp_path / "lat", "-o", tmp_path / "wav")  # codec as recorded
    assert decoded.exit_code == 0, decoded.output
    samples, rate = soundfile.read(tmp_path / "wav" / "a.wav")
    assert rate == 16_000 and samples.shape == (round(16_000 * 1.3), 2)
    expected = codec.decode(latents.latents[None], length=latents.length)[0]
    torch.testing.assert_close(torch.from_numpy(samples.T).float(), expected,
                               atol=1e-4, rtol=0)  # 16-bit wav rounding

    again = _invoke("encode", audio, "-o", tmp_path / "lat", "--model", models / "vae")
    assert "0 encoded, 2 skipped" in again.output
    other = _invoke("encode", audio, "-o", tmp_path / "lat", "--model", models / "vae",
                    "--latent-dtype", "float32")
    assert other.exit_code == 2 and "float16 latents" in other.output
    assert "float32 latents" in other.output
    replaced = _invoke("encode", audio, "-o", tmp_path / "lat", "--model", models / "vae",
                       "--latent-dtype", "float32", "--overwrite")
    assert replaced.exit_code == 0 and load_latents(tmp_path / "lat" / "a.mmdlat").dtype == (
        "float32")


def test_latents_and_codes_are_not_mixed_up(models, tmp_path):
    audio = _audio(tmp_path / "in")
    refused = _invoke("encode", audio, "-o", tmp_path / "lat", "--model", models / "vae",
                      "--n-q", "2")
    assert refused.exit_code == 2 and "continuous latent" in refused.output
    with pytest.warns(UserWarning, match="2 channel"):  # the stereo files, for a mono codec
        assert _invoke("encode", audio, "-o", tmp_path / "tok", "--model",
                       models / "rvq").exit_code == 0
    assert load_tokens(tmp_path / "tok" / "a.mmdtok").num_codebooks == 4
    mixed = _invoke("decode", tmp_path / "tok", "-o", tmp_path / "wav", "--model",
                    models / "vae")
    assert mixed.exit_code == 1 and "decode them with the codec that encoded them" in (
        mixed.output)


def test_evaluate_scores_the_float16_latent_as_one_rate(models, tmp_path):
    audio = _audio(tmp_path / "in")
    result = _invoke("evaluate", audio, "--model", models / "vae", "--baseline", "",
                     "--no-visqol")
    assert result.exit_code == 0, result.output
    assert "float16 latent" in result.output and "codebook" not in result.output
    assert "128.00" in result.output  # 16 channels x 16 bits x 500 frames/s / 1000
    refused = _invoke("evaluate", audio, "--model", models / "vae", "--n-q", "1",
                      "--baseline", "", "--no-visqol")
    assert refused.exit_code == 2 and "continuous" in refused.output


def _latent_files(folder, copied: bool):
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        noise = torch.randn(8, 640, generator=gen)
        values = torch.empty(8, 640)
        values[:, 0] = noise[:, 0]
        for t in range(1, 640):  # AR(1): correlated in time, stationary
            values[:, t] = 0.9 * values[:, t - 1] + noise[:, t]
        if copied:
            values[4:] = values[:4] + 0.05 * torch.randn(4, 640, generator=gen)
        save_latents(folder / f"{i}.mmdlat", LatentFile(
            latents=values, groups=2, codec="c", codec_fingerprint="f", sample_rate=16_000,
            channels=1, frame_rate=20.0, length=640 * 800))
    return folder


def test_inspect_measures_the_dependence_between_latent_groups(tmp_path):
    def run(folder):
        result = _invoke("inspect", folder, "--pattern", "parallel")
        assert result.exit_code == 0, result.output
        line = next(x for x in result.output.splitlines() if x.startswith("independence"))
        loss, shuffled = (float(v) for v in re.findall(r"[-\d.]+e[-+]\d+", line))
        rows = result.output.splitlines()[-2:]
        return loss, shuffled, float(rows[0].split()[2])

    loss, shuffled, correlation = run(_latent_files(tmp_path / "copied", copied=True))
    assert loss > 5 * abs(shuffled) and correlation > 0.9
    loss, shuffled, correlation = run(_latent_files(tmp_path / "independent", copied=False))
    assert abs(loss - shuffled) < 0.2 * max(abs(shuffled), 1e-4) + 2e-3 and correlation < 0.5
    regrouped = _invoke("inspect", tmp_path / "copied", "--groups", "3")
    assert regrouped.exit_code == 2 and "divide the 8 latent channels" in regrouped.output


def test_encode_takes_a_manifest_and_its_split(models, tmp_path):
    import json

    for package in ("one", "two"):
        _audio(tmp_path / "share" / package)
    entries = [{"path": str(tmp_path / "share" / p / "a.wav"), "split": s}
               for p, s in (("one", "train"), ("two", "test"))]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    result = _invoke("encode", manifest, "-o", tmp_path / "all", "--model", models / "vae")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(tmp_path / "all").as_posix()
                  for p in (tmp_path / "all").rglob("*.mmdlat")) == ["one/a.mmdlat",
                                                                     "two/a.mmdlat"]
    train = _invoke("encode", manifest, "--split", "train", "-o", tmp_path / "train",
                    "--model", models / "vae")
    assert train.exit_code == 0 and [p.name for p in (tmp_path / "train").rglob("*.mmdlat")
                                     ] == ["a.mmdlat"]
