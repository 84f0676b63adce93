"""The depth head (the joint model at the factorized model's length) and the
factorization gap measured with it, against synthetic codes of known dependence."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.musicgen_lm import gap as gap_lib
from examples.musicgen_lm import model as model_lib
from examples.musicgen_lm import sampling
from examples.musicgen_lm import train as train_lib
from examples.musicgen_lm.synthetic import SHAPE, copied_codes, copy_information, measure, token_set
from mmdtok.tokens import TokenFile, save_tokens

LMConfig, MusicGenLM = model_lib.LMConfig, model_lib.MusicGenLM


def tiny_depth(pattern: str, k: int = 3, c: int = 8, frames: int = 10) -> MusicGenLM:
    """A depth-head LM whose depth head is not at its (zero) starting point."""
    model = MusicGenLM(LMConfig(k, c, pattern, frames, head="depth", **SHAPE)).eval()
    torch.nn.init.normal_(model.depth.back.weight)
    return model


@pytest.mark.parametrize("pattern", ["parallel", "delay"])
def test_code_k_of_a_step_reads_only_the_past_and_codes_before_k(pattern):
    model = tiny_depth(pattern, k=3)
    inputs, targets = model_lib.layout(torch.randint(0, 8, (2, 3, 10)), model.config)
    base = model(inputs, targets)
    step = 5
    changed = targets.clone()
    changed[:, 1, step] = (changed[:, 1, step] + 1) % 8  # code 1 of one step
    after = model(inputs, changed)
    torch.testing.assert_close(after[:, :2], base[:, :2])  # codes 0 and 1: unchanged
    torch.testing.assert_close(after[:, 2, :step], base[:, 2, :step])
    assert not torch.allclose(after[:, 2, step], base[:, 2, step])  # code 2 reads it
    later = inputs.clone()
    later[..., step + 1:] = torch.randint(0, 9, later[..., step + 1:].shape)
    torch.testing.assert_close(model(later, targets)[..., : step + 1, :],
                               base[..., : step + 1, :])


@pytest.mark.parametrize("pattern", ["parallel", "delay"])
def test_an_untrained_depth_head_is_the_factorized_model_of_the_same_seed(pattern):
    config = LMConfig(3, 8, pattern, 10, **SHAPE)
    torch.manual_seed(5)
    factorized = MusicGenLM(config).eval()
    torch.manual_seed(5)
    joint = MusicGenLM(replace(config, head="depth")).eval()
    inputs, targets = model_lib.layout(torch.randint(0, 8, (2, 3, 10)), config)
    torch.testing.assert_close(joint(inputs, targets), factorized(inputs))


def test_a_depth_model_that_predicts_uniformly_scores_k_log_c_nats_per_frame():
    model = tiny_depth("delay", k=3, c=8)
    torch.nn.init.zeros_(model.heads.weight)
    torch.nn.init.zeros_(model.heads.bias)
    codes = torch.randint(0, 8, (5, 3, 10))
    assert model_lib.nll_per_frame(model, codes, batch_size=2) == pytest.approx(3 * math.log(8))
    per_window = model_lib.nll_per_window(model, codes)
    torch.testing.assert_close(per_window, torch.full((5,), 3 * math.log(8),
                                                      dtype=torch.float64))


def test_the_depth_head_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="flatten"):
        LMConfig(2, 8, "flatten", 10, head="depth")
    with pytest.raises(ValueError, match="head must be"):
        LMConfig(2, 8, "delay", 10, head="joint")
    model = tiny_depth("parallel")
    inputs, _ = model_lib.layout(torch.randint(0, 8, (1, 3, 10)), model.config)
    with pytest.raises(ValueError, match="targets"):
        model(inputs)


@settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(-5, 5), min_size=2, max_size=40), seed=st.integers(0, 9))
def test_the_bootstrap_interval_lies_within_the_values_and_is_ordered(values, seed):
    tensor = torch.tensor(values, dtype=torch.float64)
    low, high = gap_lib.bootstrap_interval(tensor, resamples=200, seed=seed)
    assert tensor.min() - 1e-9 <= low <= high <= tensor.max() + 1e-9


def test_the_bootstrap_interval_covers_the_mean_of_the_distribution():
    # 100 windows of a N(0.3, 1) statistic: the 95% interval holds 0.3 in ~95% of draws.
    generator = torch.Generator().manual_seed(0)
    hits = 0
    for trial in range(100):
        values = 0.3 + torch.randn(100, generator=generator, dtype=torch.float64)
        low, high = gap_lib.bootstrap_interval(values, resamples=500, seed=trial)
        hits += low <= 0.3 <= high
    assert 88 <= hits <= 100


# slow tier: two LM trainings of 250 steps on 8192 clips, the README's figure at its own size
@pytest.mark.slow
def test_the_gap_matches_the_conditional_total_correlation_of_copied_codes():
    size, p = 8, 0.7
    expected = copy_information(size, p)  # 0.96 nats
    for pattern, truth in (("parallel", expected), ("delay", 0.0)):
        # Delay: code 1 of a step belongs to the frame before, whose code 0 is in the past.
        facts = measure(p, pattern, seed=0)
        low, high = facts["gap_ci95"]
        assert low <= truth <= high, (pattern, facts)
        assert facts["gap"] == pytest.approx(facts["nll_factorized"] - facts["nll_joint"])
        assert facts["frames"] == 96 * 16
        # The joint model reaches the entropy of the data: 3 log C - I per frame.
        assert facts["nll_joint"] == pytest.approx(3 * math.log(size) - expected, abs=0.08)


def test_on_independent_codes_the_interval_holds_zero():
    training = train_lib.LMTraining(steps=120, batch_size=32, lr=3e-3, warmup_steps=10)
    facts = measure(0.0, "parallel", seed=0, training=training)
    low, high = facts["gap_ci95"]
    assert low <= 0.0 <= high
    assert high - low < 0.1
    assert copy_information(8, 0.0) == 0.0


@pytest.mark.parametrize("pattern", ["parallel", "delay"])
def test_depth_sampling_reproduces_the_within_step_dependence(pattern):
    # Codebook 1 equal to codebook 0 (delay: to codebook 0 of the next frame, which the
    # delay pattern puts in the same step): a factorized model cannot sample that, the
    # depth head can.
    size = 4
    base = copied_codes(512, 17, size, 1.0, k=2, seed=5)
    if pattern == "delay":
        base = torch.stack([base[:, 0, :-1], base[:, 0, 1:]], dim=1)
    tokens = token_set(base[..., :16], size)
    training = train_lib.LMTraining(steps=200, batch_size=32, lr=3e-3, warmup_steps=10)
    config = LMConfig(2, size, pattern, 16, head="depth", **SHAPE)
    model, _ = train_lib.train_lm(config, training, tokens, progress=False)
    codes = sampling.generate(model, 12, 16, top_k=0, temperature=1.0,
                              generator=torch.Generator().manual_seed(0))
    assert codes.shape == (16, 2, 12) and 0 <= int(codes.min()) and int(codes.max()) < size
    if pattern == "parallel":
        agree = codes[:, 0] == codes[:, 1]
    else:
        agree = codes[:, 0, 1:] == codes[:, 1, :-1]
    assert agree.double().mean() > 0.9
    assert len(codes[:, 0].unique()) == size  # it samples, it does not collapse


def test_the_gap_command_writes_gap_json_from_token_files(tmp_path):
    size = 8
    for split, count, seed in (("train", 48, 6), ("valid", 12, 7)):
        for i, clip in enumerate(copied_codes(count, 40, size, 0.7, seed=seed)):
            save_tokens(tmp_path / split / f"{i}.mmdtok", TokenFile(
                codes=clip, codec="synthetic", codec_fingerprint="f" * 16,
                sample_rate=24000, channels=1, frame_rate=50.0, codebook_size=size,
                length=40 * 480, source=f"{i}.wav"))
    out = tmp_path / "gap"
    code = gap_lib.main([str(tmp_path / "train"), "--valid", str(tmp_path / "valid"),
                         "--pattern", "parallel", "--frames", "20", "--steps", "30",
                         "--dim", "32", "--layers", "1", "--heads", "2", "--depth-dim", "32",
                         "--batch-size", "8", "-o", str(out)])
    assert code == 0
    facts = json.loads((out / "gap.json").read_text())
    assert {"pattern", "nll_factorized", "nll_joint", "gap", "gap_ci95", "frames",
            "steps"} <= set(facts)
    assert facts["pattern"] == "parallel" and facts["steps"] == 30
    assert facts["frames"] == 12 * 2 * 20  # two windows of 20 frames per 40-frame file
    assert facts["gap_ci95"][0] <= facts["gap"] <= facts["gap_ci95"][1]
    assert facts["codec_fingerprint"] == "f" * 16
    assert len(facts["window_gaps"]) == 24
    assert sum(facts["window_gaps"]) / 24 == pytest.approx(facts["gap"], abs=1e-5)
    same = gap_lib.paired_difference(facts["window_gaps"], facts["window_gaps"])
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match="same audio"):
        gap_lib.paired_difference(facts["window_gaps"], facts["window_gaps"][:-1])
    assert gap_lib.main([str(tmp_path / "train"), "-o", str(out)]) == 2  # no --valid
