"""EnCodec's adversarial losses follow their definitions (on per-scale logits and feature
maps of any discriminator)."""

import pytest
import torch

from mmdtok.losses.adversarial import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)


def _logits(values):
    return [torch.tensor(v) for v in values]


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
    real, fake = maps, [[fake_map]]
    assert feature_matching_loss(real, real).item() == 0
    value = feature_matching_loss(real, fake)
    assert value.item() == pytest.approx(1 / 4)
    value.backward()
    assert fake_map.grad is not None
