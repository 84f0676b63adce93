import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.losses.spectral import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    hz_to_mel,
    log_stft_distance,
    mel_distance,
    mel_filterbank,
    si_sdr,
    with_mid_side,
)


def test_mel_filters_are_triangles_that_sum_to_one_between_the_outer_centres():
    bank = mel_filterbank(1024, 40, 24_000, f_min=64.0)
    assert bank.shape == (40, 513) and bank.min() >= 0 and bank.max() <= 1
    bins = torch.linspace(0, 12_000, 513)
    centres = bins[bank.argmax(dim=1)]
    assert torch.all(centres.diff() >= 0)
    inside = (bins > centres[0] + 50) & (bins < centres[-1] - 50)
    torch.testing.assert_close(bank[:, inside].sum(dim=0), torch.ones(int(inside.sum())),
                               atol=1e-5, rtol=0)
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))


def test_the_mel_loss_is_zero_on_equal_inputs_and_grows_with_the_difference(tiny_corpus):
    import soundfile

    folder, pieces = tiny_corpus
    audio, rate = soundfile.read(folder / pieces[0].path, dtype="float32")
    x = torch.from_numpy(audio[: 3 * rate])[None, None]
    loss = MultiScaleMelLoss(rate)
    assert loss(x, x).item() == 0
    noise = torch.randn_like(x)
    small, large = loss(x + 0.001 * noise, x), loss(x + 0.05 * noise, x)
    assert 0 < small < large
    lowpass = torch.nn.functional.avg_pool1d(x, 9, stride=1, padding=4)
    assert loss(lowpass, x) > small


def test_the_mel_loss_has_gradients_and_checks_shapes():
    x = torch.randn(2, 1, 4000, requires_grad=True)
    loss = MultiScaleMelLoss(16_000, n_mels=32)
    loss(x, torch.randn(2, 1, 4000)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        loss(x, torch.randn(2, 1, 3999))
    assert mel_distance(x.detach(), x.detach(), 16_000).item() == 0


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(0.01, 100), seed=st.integers(0, 1000))
def test_si_sdr_is_invariant_to_the_estimate_scale(scale, seed):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(2, 1, 500, generator=gen)
    estimate = target + 0.3 * torch.randn(2, 1, 500, generator=gen)
    torch.testing.assert_close(si_sdr(scale * estimate, target), si_sdr(estimate, target),
                               atol=1e-4, rtol=1e-5)


def test_si_sdr_of_an_orthogonal_error_is_the_energy_ratio():
    t = torch.arange(8000) / 8000
    target = torch.sin(2 * math.pi * 50 * t)
    error = 0.1 * torch.sin(2 * math.pi * 120 * t)  # orthogonal over whole periods
    value = si_sdr((target + error)[None, None], target[None, None])
    assert value.item() == pytest.approx(20.0, abs=0.01)


@settings(max_examples=20, deadline=None)
@given(gain=st.floats(0.05, 20), seed=st.integers(0, 1000))
def test_the_stft_loss_is_zero_on_equal_inputs_and_its_log_term_measures_a_gain(gain, seed):
    torch.manual_seed(seed)
    x = torch.randn(2, 1, 6000)
    loss = MultiResolutionSTFTLoss()
    assert loss(x, x).item() == 0
    # a gain g changes every log10 magnitude by log10(g) and the spectral convergence
    # to |g - 1|, at every resolution
    expected = abs(gain - 1) + abs(math.log10(gain))
    assert loss(gain * x, x).item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert log_stft_distance(gain * x, x).item() == pytest.approx(abs(math.log10(gain)),
                                                                  rel=1e-4, abs=1e-5)


def test_the_stft_loss_has_gradients_grows_with_noise_and_checks_shapes():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 8000)
    x = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    loss = MultiResolutionSTFTLoss()
    value = loss(x, target)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert loss(target + 0.01 * torch.randn_like(target), target) < value.detach()
    with pytest.raises(ValueError, match="shapes differ"):
        loss(target, target[..., :-1])


def test_stereo_is_compared_as_left_right_mid_and_side():
    torch.manual_seed(1)
    target = torch.randn(2, 2, 6000)
    narrowed = target.clone()
    side = (target[:, 0] - target[:, 1]) / 2
    narrowed[:, 0] -= 0.5 * side  # the same mid, half the side: a narrower stereo image
    narrowed[:, 1] += 0.5 * side
    with_ms, plain = MultiResolutionSTFTLoss(), MultiResolutionSTFTLoss(mid_side=False)
    assert with_ms(target, target).item() == 0
    expected = plain(with_mid_side(narrowed), with_mid_side(target))
    assert with_ms(narrowed, target).item() == pytest.approx(expected.item(), rel=1e-6)
    mid = with_mid_side(target)[:, 2]
    torch.testing.assert_close(with_mid_side(narrowed)[:, 2], mid)
    mono = target[:, :1]
    assert with_ms(0.5 * mono, mono).item() == plain(0.5 * mono, mono).item()
