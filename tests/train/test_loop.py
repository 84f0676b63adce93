"""The trainer on the tiny corpus: losses fall, a killed run resumes exactly, NaN steps
are skipped, settings are checked."""

import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmdtok import Codec
from mmdtok.train.checkpoint import load_checkpoint
from mmdtok.train.config import TrainConfig, load_config
from mmdtok.train.folder import RunFolder
from mmdtok.train.loop import learning_rate_factor, train

ROOT = Path(__file__).parents[2]
SETTINGS = ["steps=8", "batch_size=2", "segment_seconds=0.25", "discriminator_filters=4",
            "independence=true", "independence_every=3", "checkpoint_every=2",
            "warmup_steps=2"]


def _command(manifest, out, *extra):
    return [sys.executable, "-m", "mmdtok", "train-codec", str(manifest), "-o", str(out),
            *SETTINGS, *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# slow tier: kill and resume of a real training process (two runs of 8 steps)
@pytest.mark.slow
def test_a_killed_run_resumes_exactly_like_an_uninterrupted_one(tiny_corpus, tmp_path):
    manifest = tiny_corpus[0] / "manifest.jsonl"
    subprocess.run(_command(manifest, tmp_path / "whole"), env=_env(), check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.Popen(_command(manifest, tmp_path / "killed"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # kill between checkpoints, work in flight is lost
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(checkpoint)["step"]
    assert killed_at < 8
    subprocess.run(_command(manifest, tmp_path / "killed", "--resume"), env=_env(),
                   check=True, capture_output=True, timeout=600)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(checkpoint)
    assert resumed["step"] == whole["step"] == 8
    for part in ("codec", "ema", "discriminator"):
        for key, value in whole[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key}"
    assert (Codec.from_pretrained(tmp_path / "whole").fingerprint()
            == Codec.from_pretrained(tmp_path / "killed").fingerprint())


# slow tier: a training run of 30 steps: a loss that falls needs steps
@pytest.mark.slow
def test_training_lowers_the_reconstruction_loss_and_writes_a_model_folder(tiny_corpus,
                                                                           tmp_path):
    config = TrainConfig(steps=30, batch_size=4, segment_seconds=0.5, warmup_steps=5,
                         checkpoint_every=30, adversarial_from=1000, discriminator_filters=4,
                         weights={"l1": 0.1, "mel": 2.0, "stft": 1.0}, sampling="duration")
    mels, stfts = [], []
    train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path,
          progress=lambda step, values: (mels.append(values["mel"]),
                                         stfts.append(values["stft"])))
    # Medians: a batch whose crops fall in digital silence (the tail of a piece rendered
    # without a noise floor) has a log-mel loss several times the others at any step.
    assert statistics.median(mels[-10:]) < 0.5 * statistics.median(mels[:5])
    assert statistics.median(stfts[-10:]) < 0.8 * statistics.median(stfts[:5])
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 30
    codec = Codec.from_pretrained(tmp_path)
    assert codec.config.name == "small-music"


def test_the_discriminator_trains_alone_through_its_warmup_at_its_own_rate(tiny_corpus,
                                                                           tmp_path):
    config = TrainConfig(steps=5, batch_size=2, segment_seconds=0.25, warmup_steps=0,
                         schedule="constant", checkpoint_every=5, adversarial_from=1,
                         discriminator_warmup=2, discriminator_lr=1e-3,
                         discriminator_filters=4, valid_fraction=0.0)
    logged = []
    run = train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path,
                progress=lambda step, values: logged.append(set(values)))
    trains = ["discriminator" in keys for keys in logged]
    judges = ["adversarial" in keys and "features" in keys for keys in logged]
    assert trains == [False, True, True, True, True]
    assert judges == [False, False, False, True, True]
    assert run.disc_optimizer.param_groups[0]["lr"] == 1e-3
    assert run.optimizer.param_groups[0]["lr"] == config.lr


def test_steps_with_non_finite_losses_are_skipped(tiny_corpus, tmp_path):
    import numpy as np
    import soundfile

    poisoned = tmp_path / "data"
    poisoned.mkdir()
    samples = np.full((24_000, 1), np.nan, dtype=np.float32)
    soundfile.write(poisoned / "nan.wav", samples, 24_000, subtype="FLOAT")
    config = TrainConfig(steps=8, batch_size=2, segment_seconds=0.25, checkpoint_every=8,
                         discriminator_filters=4, valid_fraction=0.0)
    run = train(config, [tiny_corpus[0] / "manifest.jsonl", poisoned], tmp_path / "run")
    assert 0 < run.skipped < 8
    assert all(torch.isfinite(p).all() for p in run.codec.parameters())
    assert all(torch.isfinite(p).all() for p in run.ema.model.parameters())
    exported = Codec.from_pretrained(tmp_path / "run")  # recalibrated without the NaN file
    assert all(torch.isfinite(b).all() for b in exported.buffers() if b.is_floating_point())


def test_settings_are_checked_and_overridden(tmp_path):
    config = TrainConfig().with_overrides(["steps=10", "betas=[0.8, 0.99]", "codec=small-music"])
    assert config.steps == 10 and config.betas == (0.8, 0.99)
    with pytest.raises(ValueError, match="unknown training setting keys"):
        TrainConfig().with_overrides(["stepz=3"])
    with pytest.raises(ValueError, match="not key=value"):
        TrainConfig().with_overrides(["steps"])
    (tmp_path / "c.json").write_text(json.dumps({"steps": 5, "schedule": "constant"}))
    assert load_config(tmp_path / "c.json").steps == 5
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    factors = [learning_rate_factor(s, TrainConfig(steps=100, warmup_steps=10))
               for s in range(100)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))



def test_quantizer_overrides_reach_the_trained_codec_and_cannot_change_its_kind():
    from mmdtok.train.state import build_run

    config = TrainConfig().with_overrides(
        ['quantizer={"codebook_size": 64, "codebook": {"decay": 0.9}}'])
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    run = build_run(config, torch.device("cpu"))
    assert run.codec.codebook_size == 64 and run.codec.num_codebooks == 4
    assert run.codec.config.quantizer["latent_norm"] is True  # the rest of the preset
    options = run.codec.quantizer.codebooks[0].options
    assert options.decay == 0.9 and options.kmeans_iters == 20  # one codebook option changed
    with pytest.raises(ValueError, match="kind"):
        TrainConfig(quantizer={"kind": "fsq"})


def test_a_run_can_start_from_a_trained_codec_and_choose_the_loss_pattern(tmp_path):
    from mmdtok.train.state import build_run

    bundled = Codec.bundled()  # float16, weight norm folded: unfolded into the run
    config = TrainConfig(init_from="mmdtok:small-music", independence=True,
                         independence_pattern="parallel")
    run = build_run(config, torch.device("cpu"))
    assert any(".parametrizations." in name for name in run.codec.state_dict())
    audio = torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(0))
    run.codec.eval()
    with torch.inference_mode():
        codes = run.codec.encode(audio)
        assert torch.equal(codes, bundled.encode(audio))
        torch.testing.assert_close(run.codec.decode(codes), bundled.decode(codes).float(),
                                   atol=1e-5, rtol=0)
    assert run.independence.loss.pattern == "parallel"
    assert build_run(TrainConfig(independence=True),
                     torch.device("cpu")).independence.loss.pattern == "delay"  # the preset's
    # A run that starts from an untrained codec is that codec, not a fresh draw.
    fresh = build_run(TrainConfig(seed=3), torch.device("cpu")).codec
    fresh.save_pretrained(tmp_path / "start")
    other = build_run(TrainConfig(seed=4, init_from=str(tmp_path / "start")),
                      torch.device("cpu")).codec
    for (name, a), b in zip(fresh.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="another architecture"):
        build_run(TrainConfig(init_from="mmdtok:small-music", quantizer={"codebook_size": 64}),
                  torch.device("cpu"))
    with pytest.raises(ValueError, match="independence_pattern"):
        TrainConfig(independence_pattern="flatten")


def test_validation_and_tensorboard_logs(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(steps=6, batch_size=2, segment_seconds=0.25, checkpoint_every=6,
                         discriminator_filters=4, valid_fraction=0.5, valid_every=3,
                         valid_files=2, valid_seconds=1.0, tensorboard=True, log_every=2)
    train(config, [tiny_corpus[0] / "audio"], tmp_path / "run")
    lines = [json.loads(line) for line in
             (tmp_path / "run" / "validation.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 6]
    for line in lines:
        assert math.isfinite(line["si_sdr"]) and line["mel_distance"] > 0
        assert all(1 <= line[f"perplexity_{k}"] <= 1024 for k in range(4))
        assert all(0 < line[f"utilization_{k}"] <= 1 for k in range(4))
    events = EventAccumulator(str(tmp_path / "run" / "logs")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/mel", "train/l1", "train/perplexity_0", "train/lr", "valid/si_sdr",
            "valid/mel_distance", "valid/perplexity_3"} <= scalars
    assert [e.step for e in events.Scalars("train/mel")] == [2, 4, 6]
    assert set(events.Tags()["audio"]) == {"audio/original", "audio/reconstruction"}
    assert events.Scalars("valid/si_sdr")[-1].value == pytest.approx(lines[-1]["si_sdr"])


def test_resume_accepts_other_runtime_settings_only(tiny_corpus, tmp_path):
    config = TrainConfig(steps=4, batch_size=1, segment_seconds=0.25, checkpoint_every=2,
                         discriminator_filters=4, valid_every=0)
    manifest = [tiny_corpus[0] / "manifest.jsonl"]
    train(config, manifest, tmp_path, max_steps=2)
    with pytest.raises(ValueError, match="already holds a run"):
        train(config, manifest, tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        train(config.with_overrides(["lr=0.1"]), manifest, tmp_path, resume=True)
    run = train(config.with_overrides(["checkpoint_every=1"]), manifest, tmp_path, resume=True)
    assert run.step == 4


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default(tiny_corpus,
                                                                             tmp_path):
    config = TrainConfig(steps=4, batch_size=1, segment_seconds=0.25, checkpoint_every=2,
                         discriminator_filters=4, valid_every=0)
    manifest = [tiny_corpus[0] / "manifest.jsonl"]
    train(config, manifest, tmp_path, max_steps=2)
    checkpoint = RunFolder(tmp_path).checkpoint
    state = load_checkpoint(checkpoint)
    del state["config"]["sampling"]  # as an older trainer wrote it
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match="sampling='file' \\(now 'duration'\\)"):
        train(config.with_overrides(["sampling=duration"]), manifest, tmp_path, resume=True)
    assert train(config, manifest, tmp_path, resume=True).step == 4


# slow tier: two training runs of 16 steps
@pytest.mark.slow
def test_a_vae_codec_trains_with_its_kl_term_and_the_independence_loss(tiny_corpus, tmp_path):
    settings = dict(codec="small-vae", steps=16, batch_size=2, segment_seconds=0.5,
                    warmup_steps=2, checkpoint_every=16, adversarial_from=1000,
                    weights={"l1": 0.1, "mel": 2.0, "stft": 1.0}, independence=True,
                    independence_every=4, independence_preset="rff", valid_every=16,
                    valid_files=2, valid_seconds=2.0, valid_fraction=0.3)
    logs = {}
    for weight in (1.0, 0.0):
        values = []
        train(TrainConfig(kl_weight=weight, **settings), [tiny_corpus[0] / "audio"],
              tmp_path / str(weight), progress=lambda step, v: values.append(v))
        logs[weight] = values
    kl = {w: [v["kl"] for v in values] for w, values in logs.items()}
    # The KL term pulls the posterior to the prior only when it is weighted.
    assert statistics.mean(kl[1.0][-4:]) < 0.5 * statistics.mean(kl[1.0][:2])
    assert statistics.mean(kl[0.0][-4:]) > statistics.mean(kl[1.0][-4:])
    assert any("independence" in v for v in logs[1.0])
    assert all("perplexity_0" not in v for v in logs[1.0])
    validation = [json.loads(line) for line in (tmp_path / "1.0" / "validation.jsonl")
                  .read_text().splitlines()]
    assert math.isfinite(validation[-1]["si_sdr"])
    codec = Codec.from_pretrained(tmp_path / "1.0")
    assert codec.continuous and codec.config.name == "small-vae"
    latent = codec.encode(torch.randn(1, 2, 8192))
    assert latent.shape == (1, 64, 4) and latent.is_floating_point()


@pytest.mark.parametrize("preset", ["small-music", "small-music-causal", "small-vae",
                                    "small-dac"])
def test_a_decoder_only_run_leaves_the_encoder_and_quantizer_bitwise_as_they_were(
        preset, tiny_corpus, tmp_path):
    """Every architecture (SEANet, causal SEANet, the VAE, DAC with its weight-normed
    quantizer projections): the exported codec's encoder and quantizer tensors are the
    start's, bit for bit, not re-derived from a weight-norm pair."""
    from mmdtok.testing import trained_codebooks

    start = tmp_path / "start"
    (trained_codebooks(preset) if preset != "small-vae"
     else Codec.from_preset(preset).for_inference()).save_pretrained(start)
    config = TrainConfig(codec=preset, init_from=str(start), trainable="decoder", steps=2,
                         batch_size=1, segment_seconds=0.2, warmup_steps=0, lr=1e-2,
                         checkpoint_every=2, discriminator_filters=4, valid_fraction=0.0)
    train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path / "run")
    before = Codec.from_pretrained(start).state_dict()
    after = Codec.from_pretrained(tmp_path / "run").state_dict()
    fixed = [name for name in before if not name.startswith("decoder.")]
    assert fixed and before.keys() == after.keys()
    changed = [name for name in fixed if not torch.equal(before[name], after[name])]
    assert changed == []
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))


def test_a_decoder_only_run_keeps_every_code_and_trains_the_decoder(tiny_corpus, tmp_path):
    from mmdtok.train.state import build_run

    config = TrainConfig(init_from="mmdtok:small-music", trainable="decoder", steps=4,
                         batch_size=2, segment_seconds=0.25, warmup_steps=0, lr=1e-3,
                         checkpoint_every=4, discriminator_filters=4, valid_fraction=0.0)
    start = build_run(config, torch.device("cpu")).codec.state_dict()
    run = train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path / "run")
    assert run.codec.quantizer.training  # codebook dropout stays on for the decoder
    assert not any(m.training for m in run.codec.encoder.modules())
    for name, value in run.codec.state_dict().items():
        same = torch.equal(value, start[name])
        assert same == (not name.startswith("decoder.")), name
    optimized = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in run.codec.decoder.parameters()}
    # The exported codec (not recalibrated) encodes exactly as the one it started from.
    audio = torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(0))
    exported = Codec.from_pretrained(tmp_path / "run")
    assert torch.equal(exported.encode(audio), Codec.bundled().encode(audio))
    with pytest.raises(ValueError, match="independence"):
        TrainConfig(trainable="decoder", independence=True)
    with pytest.raises(ValueError, match="trainable"):
        TrainConfig(trainable="encoder")


def test_a_decoder_only_run_puts_a_frame_rate_decoder_behind_the_same_codes(tiny_corpus,
                                                                            tmp_path):
    """init_from the shipped codec with decoder={"istft": ...}: its encoder and codebooks
    are copied, the new decoder starts fresh and trains; a run that trains everything
    cannot start from another architecture."""
    from mmdtok.models import ISTFTDecoder

    small = {"istft": {"dim": 32, "intermediate": 64, "blocks": 2}}
    config = TrainConfig(init_from="mmdtok:small-music", trainable="decoder", decoder=small,
                         steps=3, batch_size=2, segment_seconds=0.25, warmup_steps=0,
                         lr=1e-3, checkpoint_every=3, valid_fraction=0.0,
                         weights={"l1": 0.1, "mel": 1.0, "stft": 1.0}, adversarial_from=3)
    run = train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path / "run")
    assert isinstance(run.codec.decoder, ISTFTDecoder)
    exported = Codec.from_pretrained(tmp_path / "run")
    assert exported.config.istft is not None and exported.config.istft.dim == 32
    audio = torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(0))
    codes = exported.encode(audio)
    assert torch.equal(codes, Codec.bundled().encode(audio))
    assert exported.decode(codes).shape == (1, 1, codes.shape[-1] * exported.hop_length)
    with pytest.raises(ValueError, match="another architecture"):
        train(replace(config, trainable="all"), [tiny_corpus[0] / "manifest.jsonl"],
              tmp_path / "all")
    with pytest.raises(ValueError, match="decoder must be"):
        TrainConfig(decoder={"seanet": {}})
    with pytest.raises(ValueError, match="unknown|dims"):
        TrainConfig(decoder={"istft": {"dims": 3}})


@pytest.mark.parametrize("recipe", sorted((ROOT / "examples" / "train").glob("*.json")),
                         ids=lambda path: path.stem)
def test_every_recipe_in_examples_is_a_valid_training_config(recipe):
    written = json.loads(recipe.read_text())
    config = load_config(recipe)
    assert {k: getattr(config, k) for k in written} == {
        k: tuple(v) if k == "betas" else v for k, v in written.items()}
    assert config.codec_config().name == config.codec  # its preset exists
