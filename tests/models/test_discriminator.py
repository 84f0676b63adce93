import pytest
import torch

from mmdtok.losses.adversarial import hinge_discriminator_loss
from mmdtok.models.discriminator import MultiScaleSTFTDiscriminator


@pytest.mark.parametrize("channels", [1, 2])
def test_every_scale_returns_logits_and_five_feature_maps(channels):
    disc = MultiScaleSTFTDiscriminator(channels=channels, filters=8)
    out = disc(torch.randn(2, channels, 4000))
    assert len(out.logits) == len(out.features) == 5
    for n_fft, logits, features in zip((1024, 2048, 512, 256, 128), out.logits, out.features):
        frames, bins = 4000 // (n_fft // 4) + 1, n_fft // 2 + 1
        assert logits.shape[:3] == (2, 1, frames) and len(features) == 5
        assert logits.shape[-1] == (bins + 7) // 8  # three stride-2 steps along frequency


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
        loss = hinge_discriminator_loss(disc(real).logits, disc(fake).logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
