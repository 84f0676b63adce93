"""The reference MusicGen-style LM: layouts, causality, likelihoods, training, sampling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import soundfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.musicgen_lm import data as data_lib
from examples.musicgen_lm import generate, sampling
from examples.musicgen_lm import model as model_lib
from examples.musicgen_lm import train as train_lib
from mmdtok.train.loop import warmup_cosine

LMConfig, MusicGenLM = model_lib.LMConfig, model_lib.MusicGenLM
PATTERNS = ("parallel", "delay", "flatten")


def tiny(pattern: str, k: int = 3, c: int = 8, frames: int = 10, **shape) -> MusicGenLM:
    shape = {"dim": 32, "layers": 2, "heads": 2, "dropout": 0.0} | shape
    return MusicGenLM(LMConfig(k, c, pattern, frames, **shape)).eval()


@settings(max_examples=40, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), k=st.integers(1, 4), t=st.integers(1, 12),
       c=st.integers(2, 9))
def test_every_code_is_a_target_exactly_once_and_inputs_are_targets_shifted(pattern, k, t, c):
    codes = torch.randint(0, c, (2, k, t))
    config = LMConfig(k, c, pattern, frames=t)
    inputs, targets = model_lib.layout(codes, config)
    valid = targets != model_lib.IGNORE
    assert int(valid.sum()) == codes.numel()
    assert sorted(targets[valid].tolist()) == sorted(codes.flatten().tolist())
    assert (inputs[..., 0] == c).all()  # the start token
    shifted = targets[..., :-1].masked_fill(~valid[..., :-1], c)
    assert torch.equal(inputs[..., 1:], shifted)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_logits_of_a_step_do_not_depend_on_later_inputs(pattern):
    model = tiny(pattern)
    inputs, _ = model_lib.layout(torch.randint(0, 8, (2, 3, 10)), model.config)
    cut = inputs.shape[-1] // 2
    changed = inputs.clone()
    changed[..., cut:] = torch.randint(0, 9, changed[..., cut:].shape)
    before, after = model(inputs), model(changed)
    # The logits of step n read inputs 0..n (input n is the code of step n - 1).
    torch.testing.assert_close(before[:, :, :cut], after[:, :, :cut])
    assert not torch.allclose(before[:, :, cut:], after[:, :, cut:])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_model_that_predicts_uniformly_scores_k_log_c_nats_per_frame(pattern):
    model = tiny(pattern, k=3, c=8)
    torch.nn.init.zeros_(model.heads.weight)
    torch.nn.init.zeros_(model.heads.bias)
    codes = torch.randint(0, 8, (5, 3, 10))
    assert model_lib.nll_per_frame(model, codes, batch_size=2) == pytest.approx(3 * math.log(8))
    per_codebook = model_lib.loss_per_codebook(model, codes)
    torch.testing.assert_close(per_codebook, torch.full((3,), math.log(8)))


def anticipating_codes(count: int, frames: int) -> torch.Tensor:
    """Codebook 0 uniform over 4 codes, codebook 1 at frame t equal to codebook 0 at t + 1:
    one fresh code (log 4 nats) per frame. A delay-pattern LM predicts z0[s] and
    z1[s - 1] = z0[s] at the same step, independently: 2 log 4 per frame at best."""
    z0 = torch.randint(0, 4, (count, frames + 1))
    return torch.stack([z0[:, :-1], z0[:, 1:]], dim=1)


def test_the_flattened_joint_model_learns_what_the_delay_pattern_cannot():
    tokens = data_lib.TokenSet(list(anticipating_codes(1024, 16)), 4, "x", "", 50.0)
    held_out = anticipating_codes(64, 16)
    training = train_lib.LMTraining(steps=150, batch_size=32, lr=3e-3, warmup_steps=10)
    nll = {}
    for pattern in ("delay", "flatten"):
        config = LMConfig(2, 4, pattern, 16, dim=32, layers=2, heads=2, dropout=0.0)
        model, history = train_lib.train_lm(config, training, tokens, progress=False)
        nll[pattern] = model_lib.nll_per_frame(model, held_out)
    # Held-out: neither can beat the entropy (log 4 per frame) by more than noise.
    assert nll["delay"] == pytest.approx(2 * math.log(4), abs=0.1)
    assert nll["flatten"] == pytest.approx(math.log(4), abs=0.2)


@settings(max_examples=30, deadline=None)
@given(step=st.integers(0, 999), warmup=st.integers(1, 100))
def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine_to_zero(step, warmup):
    total = 1000
    factor = warmup_cosine(step, warmup, total)
    assert 0.0 <= factor <= 1.0
    if step < warmup:
        assert factor == pytest.approx((step + 1) / warmup)
    else:
        assert warmup_cosine(step + 1, warmup, total) <= factor
    assert warmup_cosine(total, warmup, total) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(warmup, warmup, total) == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(top_k=st.integers(1, 10), temperature=st.floats(0.1, 3.0), seed=st.integers(0, 99))
def test_top_k_sampling_draws_only_among_the_k_most_likely_codes(top_k, temperature, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 10, generator=generator)
    draws = sampling.sample_top_k(logits, top_k, temperature, generator)
    allowed = logits.topk(top_k, dim=-1).indices
    assert (allowed == draws[:, None]).any(dim=1).all()


def test_sampling_follows_the_tempered_softmax_and_temperature_zero_is_greedy():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    generator = torch.Generator().manual_seed(0)
    draws = sampling.sample_top_k(logits.expand(200_000, 4), 0, 2.0, generator)
    observed = torch.bincount(draws, minlength=4).double() / draws.numel()
    torch.testing.assert_close(observed, torch.softmax(logits.double() / 2.0, -1), atol=5e-3,
                               rtol=0)
    values = torch.randn(5, 7)
    assert torch.equal(sampling.sample_top_k(values, 3, 0.0), values.argmax(-1))


@pytest.mark.parametrize("pattern, head", [(p, "factorized") for p in PATTERNS]
                         + [("parallel", "depth"), ("delay", "depth")])
def test_greedy_generation_agrees_with_the_model_reading_its_own_output(pattern, head):
    model = tiny(pattern, frames=6, head=head, depth_dim=16)
    if head == "depth":  # away from its zero start, so that it reads the step's codes
        torch.nn.init.normal_(model.depth.back.weight)
    codes = sampling.generate(model, 5, batch_size=2, temperature=0.0)
    assert codes.shape == (2, 3, 5) and codes.min() >= 0 and codes.max() < 8
    inputs, targets = model_lib.layout(codes, model.config)
    predicted = model(inputs, targets).argmax(-1)
    valid = targets != model_lib.IGNORE
    assert torch.equal(predicted[valid], targets[valid])


def test_generation_refuses_more_frames_than_the_context():
    with pytest.raises(ValueError, match="context"):
        sampling.generate(tiny("delay", frames=6), 7)


def test_crops_never_cross_files_and_windows_tile_each_file():
    codes = [torch.full((2, n), i) for i, n in enumerate([30, 5, 12])]
    tokens = data_lib.TokenSet(codes, 8, "x", "", 50.0)
    batch = data_lib.WindowSampler(tokens, 10, seed=1).batch(256)
    assert batch.shape == (256, 2, 10)
    assert (batch == batch[:, :1, :1]).all(dim=(1, 2)).all()  # one file per crop
    assert set(batch[:, 0, 0].tolist()) == {0, 2}  # the 5-frame file is too short
    assert data_lib.windows(tokens, 10).shape == (3 + 0 + 1, 2, 10)


@pytest.fixture(scope="module")
def codec_and_tokens(tmp_path_factory):
    """A (randomly initialized) small-music codec saved to a folder, and token files of
    a real music excerpt it encoded."""
    from mmdtok import Codec
    from mmdtok.folders import Task, encode_files

    root = tmp_path_factory.mktemp("lm")
    Codec.from_preset("small-music").save_pretrained(root / "codec")
    codec = Codec.from_pretrained(root / "codec")
    excerpts = sorted((Path(__file__).parents[2] / "examples" / "audio").glob("*.flac"))
    report = encode_files(codec, [Task(p, root / "tokens" / f"{p.stem}.mmdtok")
                                  for p in excerpts])
    assert len(report.written) == len(excerpts)
    return root, codec




def test_the_scripts_train_save_and_generate_audio_through_the_codec(codec_and_tokens, capsys):
    from safetensors.torch import load_file

    from mmdtok.tokens import load_tokens

    root, codec = codec_and_tokens
    run = root / "lm-delay"
    assert train_lib.main([str(root / "tokens"), "--valid", str(root / "tokens"), "-o", str(run),
                           "--pattern", "delay", "--frames", "12", "--dim", "16", "--layers",
                           "1", "--heads", "2", "--steps", "3", "--batch-size", "2"]) == 0
    model, info = train_lib.load_lm(run)
    assert info["codec_fingerprint"] == codec.fingerprint()
    assert info["valid_nll_per_frame"] > 0
    assert set(load_file(str(run / "lm.safetensors"))) == set(model.state_dict())
    out = root / "generated"
    assert generate.main([str(run), "--codec", str(root / "codec"), "-o", str(out),
                          "--seconds", "0.1", "--count", "2", "--top-k", "5"]) == 0
    frames = round(0.1 * codec.frame_rate)
    for i in range(2):
        tokens = load_tokens(out / f"sample_{i}.mmdtok")
        assert tokens.codes.shape == (codec.num_codebooks, frames)
        assert tokens.codec_fingerprint == codec.fingerprint()
        audio, rate = soundfile.read(out / f"sample_{i}.wav")
        assert rate == codec.sample_rate and len(audio) == frames * codec.hop_length
    capsys.readouterr()
    # The joint model with the depth head, through the same scripts.
    assert train_lib.main([str(root / "tokens"), "-o", str(root / "lm-depth"), "--head",
                           "depth", "--pattern", "parallel", "--frames", "12", "--dim", "16",
                           "--layers", "1", "--heads", "2", "--depth-dim", "8", "--steps", "3",
                           "--batch-size", "2"]) == 0
    assert train_lib.load_lm(root / "lm-depth")[0].config.head == "depth"
    assert generate.main([str(root / "lm-depth"), "--codec", str(root / "codec"), "-o",
                          str(root / "generated-depth"), "--seconds", "0.1"]) == 0
    assert load_tokens(root / "generated-depth" / "sample_0.mmdtok").codes.shape == (
        codec.num_codebooks, frames)
    assert generate.main([str(run), "--codec", "mmdtok:small-music", "-o",
                          str(root / "wrong")]) == 2
    assert "not the codec" in capsys.readouterr().err
    assert not (root / "wrong").exists()


def test_token_sets_refuse_mixed_codecs_and_mixed_bitrates(codec_and_tokens, tmp_path):
    from dataclasses import replace

    from mmdtok.tokens import load_tokens, save_tokens

    root, codec = codec_and_tokens
    first = sorted((root / "tokens").glob("*.mmdtok"))[0]
    tokens = load_tokens(first)
    save_tokens(tmp_path / "fewer.mmdtok", replace(tokens, codes=tokens.codes[:2]))
    with pytest.raises(ValueError, match="same --n-q"):
        data_lib.load_token_set([first, tmp_path / "fewer.mmdtok"])
    save_tokens(tmp_path / "other.mmdtok", replace(tokens, codec_fingerprint="0" * 16))
    with pytest.raises(ValueError, match="another codec"):
        data_lib.load_token_set([first, tmp_path / "other.mmdtok"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no token file"):
        data_lib.load_token_set([tmp_path / "empty"])
