import pickle

import pytest
import torch
from torch import nn

from mmdtok.train.checkpoint import WeightEma, load_checkpoint, save_checkpoint


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_round_trip_plain_state_and_refuse_pickled_code(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7,
             "rng": torch.get_rng_state(), "config": {"name": "x", "rates": [1, 2]}}
    save_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["step"] == 7 and loaded["config"] == state["config"]
    assert torch.equal(loaded["rng"], state["rng"])
    assert torch.equal(loaded["model"]["weight"], model.weight)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(tmp_path / "c.pt", {"step": 2, "bad": lambda: 0})
    assert load_checkpoint(tmp_path / "c.pt") == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_weight_ema_follows_its_recursion_and_copies_buffers():
    model = nn.BatchNorm1d(2)
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.full((2,), 0.9 * 1.0 + 0.1 * 2.0))
    assert torch.equal(ema.model.running_mean, model.running_mean)
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        WeightEma(model, decay=1.0)
