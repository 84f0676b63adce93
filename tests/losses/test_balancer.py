import pytest
import torch

from mmdtok.losses.balancer import GradientBalancer


def test_each_loss_gets_its_weight_share_of_the_total_norm_whatever_its_scale():
    output = torch.randn(4, 1, 100, requires_grad=True)
    target = torch.randn(4, 1, 100)
    # Two losses on disjoint halves (orthogonal gradients), scales 1e6 apart.
    losses = {"big": 1e3 * (output[..., :50] - target[..., :50]).pow(2).sum(),
              "small": 1e-3 * (output[..., 50:] - target[..., 50:]).abs().sum()}
    balancer = GradientBalancer({"big": 1.0, "small": 3.0}, total_norm=2.0, ema_decay=0.0)
    grad, norms = balancer.combine(losses, output)

    def per_item(g):
        return g.reshape(4, -1).norm(dim=1).mean().item()

    assert per_item(grad[..., :50]) == pytest.approx(2.0 * 1 / 4, rel=1e-5)
    assert per_item(grad[..., 50:]) == pytest.approx(2.0 * 3 / 4, rel=1e-5)
    assert norms["big"] > 1e4 * norms["small"]


def test_the_moving_average_is_bias_corrected_and_resumes_from_its_state():
    balancer = GradientBalancer({"l": 1.0}, ema_decay=0.9)
    output = torch.ones(2, 3, requires_grad=True)
    grad, _ = balancer.combine({"l": (5 * output).sum()}, output)
    # First step: the corrected average equals this step's norm, so the norm is 1.
    assert grad.norm(dim=1).mean().item() == pytest.approx(1.0)
    state = balancer.state_dict()
    again = GradientBalancer({"l": 1.0}, ema_decay=0.9)
    again.load_state_dict(state)
    a, _ = balancer.combine({"l": (7 * output).sum()}, output)
    b, _ = again.combine({"l": (7 * output).sum()}, output)
    assert torch.equal(a, b)


def test_unknown_losses_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="positive sum"):
        GradientBalancer({"a": 0.0})
    with pytest.raises(ValueError, match="ema_decay"):
        GradientBalancer({"a": 1.0}, ema_decay=1.0)
    output = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match="have no weight"):
        GradientBalancer({"a": 1.0}).combine({"b": output.sum()}, output)
