import pytest
import torch

from mmdtok.models.discriminator import (
    DiscriminatorOutput,
    MultiScaleSTFTDiscriminator,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)


@pytest.mark.parametrize("channels", [1, 2])
def test_every_scale_returns_logits_and_five_feature_maps(channels):
    disc = MultiScaleSTFTDiscriminator(channels=channels, filters=8)
    out = disc(torch.randn(2, channels, 4000))
    assert len(out.logits) == len(out.features) == 5
    for n_fft, logits, features in zip((1024, 2048, 512, 256, 128), out.logits, out.features):
        frames, bins = 4000 // (n_fft // 4) + 1, n_fft // 2 + 1
        assert logits.shape[:3] == (2, 1, frames) and len(features) == 5
        assert logits.shape[-1] == (bins + 7) // 8  # three stride-2 steps along frequency


def _logits(values):
    return DiscriminatorOutput([torch.tensor(v) for v in values], [])


def test_hinge_losses_follow_their_definitions():
    real, fake = _logits([[2.0, 0.5], [1.5]]), _logits([[-2.0, 0.0], [0.5]])
    # scale 0: relu(1-2)=0, relu(1-0.5)=.5 -> .25; relu(1-2)=0, relu(1+0)=1 -> .5
    # scale 1: relu(1-1.5)=0; relu(1+.5)=1.5
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx((0.75 + 1.5) / 2)
    # relu(1 - (-2)) = 3, relu(1 - 0) = 1 -> 2; relu(1 - 0.5) = 0.5
    assert hinge_generator_loss(fake).item() == pytest.approx((2.0 + 0.5) / 2)


def test_feature_matching_is_zero_on_equal_features_relative_and_trains_only_fake():
    maps = [[torch.ones(1, 2, 3, 3) * 4.0]]
    fake_map = torch.full((1, 2, 3, 3), 5.0, requires_grad=True)
    real, fake = DiscriminatorOutput([], maps), DiscriminatorOutput([], [[fake_map]])
    assert feature_matching_loss(real, real).item() == 0
    value = feature_matching_loss(real, fake)
    assert value.item() == pytest.approx(1 / 4)
    value.backward()
    assert fake_map.grad is not None


def test_the_discriminator_learns_to_tell_noise_from_tones():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(filters=8, n_ffts=(256, 128))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    t = torch.arange(2000) / 16_000
    losses = []
    for _ in range(60):
        pitch = 200 + 600 * torch.rand(4, 1, 1)
        real = 0.5 * torch.sin(2 * torch.pi * pitch * t)
        fake = 0.3 * torch.randn(4, 1, 2000)
        loss = hinge_discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
