"""The latent diffusion example: the v-objective's identities, the sampler on Gaussian data,
guidance, timing, crops, and a toy run end to end on the tiny corpus."""

import json
import math
from pathlib import Path
from tempfile import mkdtemp

import pytest
import soundfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.latent_diffusion import evaluate as evaluate_script
from examples.latent_diffusion import generate as generate_script
from examples.latent_diffusion.data import CropSampler, LatentSet, load_latent_set
from examples.latent_diffusion.diffusion import (
    alpha_sigma,
    guided,
    noise_from_v,
    noisy,
    sample_dpm_solver,
    x0_from_v,
)
from examples.latent_diffusion.generate import generate, load_model
from examples.latent_diffusion.model import Conditioning, DiT, DiTConfig
from examples.latent_diffusion.text import Vocabulary, prompt_for
from examples.latent_diffusion.train import DiffusionTraining, train_dit
from mmdtok import Codec
from mmdtok.folders import Task, encode_files
from mmdtok.testing import tiny_vae
from mmdtok.tokens import load_latents


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_x0_and_noise_are_recovered_from_v_and_x_t(t, seed):
    gen = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    times = torch.full((3,), t)
    x_t, v = noisy(x0, noise, times)
    torch.testing.assert_close(x0_from_v(x_t, v, times), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noise_from_v(x_t, v, times), noise, atol=1e-5, rtol=1e-5)
    alpha, sigma = alpha_sigma(times)
    torch.testing.assert_close(alpha ** 2 + sigma ** 2, torch.ones(3))


@pytest.mark.parametrize("mean,std", [(1.5, 0.4), (-0.7, 2.0)])
def test_the_sampler_reproduces_a_gaussian_data_distribution(mean, std):
    def exact(x, t):  # the v of the optimal denoiser for N(mean, std^2) data
        alpha, sigma = (v.reshape(-1, 1, 1) for v in alpha_sigma(t))
        x0 = mean + alpha * std ** 2 / (alpha ** 2 * std ** 2 + sigma ** 2) * (x - alpha * mean)
        return alpha * (x - alpha * x0) / sigma - sigma * x0

    torch.manual_seed(0)
    samples = sample_dpm_solver(exact, torch.randn(40_000, 1, 1), steps=40)
    assert float(samples.mean()) == pytest.approx(mean, abs=0.02 * max(1, std))
    assert float(samples.std()) == pytest.approx(std, rel=0.03)
    coarse = sample_dpm_solver(exact, torch.randn(40_000, 1, 1), steps=3)
    assert abs(float(coarse.std()) - std) > abs(float(samples.std()) - std)


def test_guidance_scale_one_is_the_conditional_model():
    calls = []
    conditional = lambda x, t: calls.append("c") or x * 2
    unconditional = lambda x, t: calls.append("u") or x * 0
    x, t = torch.randn(2, 3, 4), torch.rand(2)
    assert torch.equal(guided(conditional, unconditional, 1.0)(x, t), conditional(x, t))
    assert calls == ["c", "c"]  # no unconditional pass
    torch.testing.assert_close(guided(conditional, unconditional, 3.0)(x, t), 6 * x)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=5), frames=st.integers(1, 40),
       seed=st.integers(0, 100))
def test_crops_never_cross_files(lengths, frames, seed):
    # file i holds the values i * 1000 + frame index, so every crop names its source
    latents = [(i * 1000 + torch.arange(n, dtype=torch.float32)).expand(3, n)
               for i, n in enumerate(lengths)]
    data = LatentSet(latents, [f"p{i}" for i in range(len(lengths))],
                     [str(i) for i in range(len(lengths))], 10.0, "f", "")
    batch = CropSampler(data, frames, seed).batch(16)
    for row in range(16):
        real = batch.latents[row, 0, batch.mask[row]]
        source = int(real[0]) // 1000
        start = int(real[0]) % 1000
        assert torch.equal(real, source * 1000 + start + torch.arange(len(real)).float())
        assert len(real) == min(frames, lengths[source]) and start + len(real) <= lengths[source]
        assert not batch.latents[row, :, ~batch.mask[row]].any()  # zeros past the end
        assert batch.prompts[row] == f"p{source}"
        assert float(batch.seconds_start[row]) == pytest.approx(start / 10)
        assert float(batch.seconds_total[row]) == pytest.approx(lengths[source] / 10)


def test_prompts_are_found_by_the_folders_encode_mirrored(tmp_path):
    from examples.latent_diffusion.data import ManifestPrompts

    entries = [{"path": f"/usr/share/games/{p}/music/track1.ogg", "package": p,
                "source": f"debian:{p}/track1.ogg"} for p in ("alpha", "beta")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    prompts = ManifestPrompts(tmp_path / "m.jsonl")
    assert prompts(Path("beta/music/track1.mmdlat")) == "recorded music from beta, track1"
    assert prompts(Path("other.mmdlat")) == ""
    with pytest.raises(ValueError, match="fits 2 entries"):
        prompts(Path("track1.mmdlat"))


def test_prompts_name_instruments_drums_and_the_piece():
    rendered = {"instruments": [0, 40, 41], "drums": False,
                "source": "music21:bach/bwv102.7.mxl"}
    assert prompt_for(rendered) == "piano, strings, no drums, bwv102 7"
    recorded = {"package": "ufoai-music", "source": "debian:ufoai-music/x/Battle_Theme.ogg"}
    assert prompt_for(recorded) == "recorded music from ufoai-music, Battle Theme"
    vocab = Vocabulary.from_prompts([prompt_for(rendered)])
    ids = vocab.encode(["piano, violin", ""], max_words=8)
    assert ids.shape == (2, 2) and ids[0, 1] == 1 and not ids[1].any()  # unknown; padding


@pytest.fixture(scope="module")
def toy(tiny_corpus, tmp_path_factory):
    """The tiny corpus encoded by a small (untrained) VAE codec, and a DiT trained on it."""
    root = tmp_path_factory.mktemp("latent_diffusion")
    tiny_vae(channels=1, dimension=8, ratios=(8, 4, 4), groups=2, seed=3).save_pretrained(
        root / "codec")
    codec = Codec.from_pretrained(root / "codec")
    audio = sorted((tiny_corpus[0] / "audio").rglob("*.flac"))
    report = encode_files(codec, [Task(a, root / "latents" / a.with_suffix(".mmdlat").name)
                                  for a in audio])
    assert not report.failed
    data = load_latent_set([root / "latents"], tiny_corpus[0] / "manifest.jsonl")
    shape = DiTConfig(width=32, layers=2, heads=2, text_width=16, text_layers=1)
    training = DiffusionTraining(steps=20, batch_size=4, frames=64, lr=1e-3, warmup_steps=5,
                                 checkpoint_every=10)
    model, losses = train_dit(data, shape, training, root / "dit", progress=False)
    return root, data, shape, training, model, losses


def test_the_model_learns_smooth_latents():
    gen = torch.Generator().manual_seed(0)
    steps = torch.arange(300).float()
    latents = [torch.sin(0.2 * torch.rand(8, 1, generator=gen) * steps
                         + 6.28 * torch.rand(8, 1, generator=gen)) for _ in range(10)]
    data = LatentSet(latents, ["a b"] * 10, [str(i) for i in range(10)], 20.0, "f", "")
    training = DiffusionTraining(steps=400, batch_size=8, frames=64, lr=1e-3, warmup_steps=5,
                                 checkpoint_every=1000)
    _, losses = train_dit(data, DiTConfig(width=32, layers=2, heads=2, text_width=16,
                                          text_layers=1), training, Path(mkdtemp()),
                          progress=False)
    # v has unit variance for unit-scale data: 1 is what a model that learned nothing pays
    assert sum(losses[-50:]) / 50 < 0.75 * sum(losses[:50]) / 50


def test_an_interrupted_run_resumes_like_an_uninterrupted_one(toy, tmp_path, monkeypatch):
    root, data, shape, training, model, losses = toy
    assert all(p for p in data.prompts) and data.latent_dim == 8 and len(losses) == 20
    import examples.latent_diffusion.train as train_module

    original, calls = train_module._write, []

    def stop_after_the_first_checkpoint(*args):
        original(*args)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(train_module, "_write", stop_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_dit(data, shape, training, tmp_path / "cut", progress=False)
    assert json.loads((tmp_path / "cut" / "dit.json").read_text())["step"] == 10
    resumed, resumed_losses = train_dit(data, shape, training, tmp_path / "cut", resume=True,
                                        progress=False)
    assert resumed_losses == losses
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        train_dit(data, shape, DiffusionTraining(**{**training.__dict__, "lr": 5e-4}),
                  tmp_path / "cut", resume=True, progress=False)


def test_generation_follows_the_timing_and_writes_audio_and_latents(toy, tmp_path):
    root, data, _, _, _, _ = toy
    model, vocab, meta = load_model(root / "dit")
    rate = meta["frame_rate"]
    short = generate(model, vocab, data.prompts[0], math.ceil(2 * rate), rate, steps=8, seed=1)
    long = generate(model, vocab, data.prompts[0], math.ceil(5 * rate), rate, steps=8, seed=1)
    assert short.shape == (8, math.ceil(2 * rate)) and long.shape == (8, math.ceil(5 * rate))
    x, t = torch.randn(1, 8, 20), torch.full((1,), 0.5)
    ids = vocab.encode([data.prompts[0]], 32)
    two = model(x, t, Conditioning(ids, torch.zeros(1), torch.tensor([2.0])))
    forty = model(x, t, Conditioning(ids, torch.zeros(1), torch.tensor([40.0])))
    assert not torch.allclose(two, forty)  # the trained model reads seconds_total

    generate_script.main([str(root / "dit"), "--prompt", data.prompts[0], "--seconds", "1.5",
                          "--steps", "4", "--cfg", "2", "-o", str(tmp_path / "out.wav")])
    samples, sample_rate = soundfile.read(tmp_path / "out.wav")
    assert sample_rate == 16_000 and len(samples) == 24_000
    latents = load_latents(tmp_path / "out.mmdlat")
    assert latents.num_frames == math.ceil(1.5 * rate)
    assert latents.codec_fingerprint == meta["codec_fingerprint"]
    with pytest.raises(SystemExit, match="not the one the model was trained on"):
        other = tmp_path / "other"
        Codec.from_config(Codec.from_pretrained(root / "codec").config).save_pretrained(other)
        generate_script.main([str(root / "dit"), "--codec", str(other), "-o",
                              str(tmp_path / "x.wav")])


def test_the_model_masks_padding_and_accepts_any_length():
    torch.manual_seed(0)
    model = DiT(DiTConfig(latent_dim=4, width=16, layers=1, heads=2, vocab_size=5,
                          text_width=8, text_layers=1)).eval()
    for p in model.parameters():  # leave the zero-initialized gates
        torch.nn.init.normal_(p, std=0.3)
    x, t = torch.randn(1, 4, 30), torch.rand(1)
    cond = Conditioning(torch.tensor([[2, 3]]), torch.zeros(1), torch.ones(1))
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[:, 20:] = False
    changed = x.clone()
    changed[:, :, 20:] = 100.0
    torch.testing.assert_close(model(x, t, cond, mask)[..., :20],
                               model(changed, t, cond, mask)[..., :20])
    assert model(torch.randn(1, 4, 500), t, cond).shape == (1, 4, 500)
    padded = Conditioning(torch.tensor([[2, 3, 0, 0]]), torch.zeros(1), torch.ones(1))
    torch.testing.assert_close(model(x, t, cond), model(x, t, padded))


def test_the_evaluation_scores_held_out_windows_against_predicting_zero(toy, tiny_corpus,
                                                                        tmp_path):
    root, data, _, _, _, _ = toy
    latents = sorted((root / "latents").glob("*.mmdlat"))
    out = tmp_path / "eval.json"
    evaluate_script.main([str(root / "dit"), "--train", *map(str, latents[:-2]),
                          "--test", *map(str, latents[-2:]), "--windows", "4", "--levels",
                          "3", "--samples", "2", "--seconds", "1.0", "-o", str(out)])
    result = json.loads(out.read_text())
    asked = result["generated"]["frames_asked"]
    assert asked > 0 and result["generated"]["frames"] == [asked, asked]
    for split in ("train", "test"):
        # v = alpha * noise - sigma * x0 has unit variance where x0 is unit-scale
        assert 0.3 < result["v_loss_zero_prediction"][split] < 3.0
        assert result["v_loss"][split] > 0
    moments = result["test_moments"]
    assert moments["frames"] == sum(load_latents(p).num_frames for p in latents[-2:])
    # latents of another codec (fresh weights, same config) are refused
    codec = Codec.from_config(Codec.from_pretrained(root / "codec").config)
    audio = sorted((tiny_corpus[0] / "audio").rglob("*.flac"))[0]
    assert not encode_files(codec, [Task(audio, tmp_path / "other.mmdlat")]).failed
    with pytest.raises(SystemExit, match="another codec"):
        evaluate_script.main([str(root / "dit"), "--train", str(tmp_path / "other.mmdlat"),
                              "--test", str(latents[-1])])
