"""Settings are checked by type, naming the field: no float steps, no boolean batch size."""

from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmdtok.cli import app
from mmdtok.configuration import matches
from mmdtok.models.seanet import SEANetConfig
from mmdtok.quantizers import CodebookOptions
from mmdtok.train.config import TrainConfig


@pytest.mark.parametrize("setting, message", [
    ("steps=2.5", "steps must be an integer, got 2.5"),
    ("steps=abc", "steps must be an integer, got 'abc'"),
    ("batch_size=true", "batch_size must be an integer, got True"),
    ("quantizer=5", "quantizer must be an object"),
    ('weights={"l1": "x"}', "weights must be an object whose values are each a number"),
    ("independence=1", "independence must be true or false, got 1"),
    ("betas=[0.5]", "betas must be a list of 2"),
    ("seed=null", "seed must be an integer, got None"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_setting(setting, message):
    with pytest.raises(ValueError, match=f"training setting {message}".replace("[", r"\[")):
        TrainConfig().with_overrides([setting])


def test_numbers_where_floats_are_expected_are_accepted():
    config = TrainConfig().with_overrides(["lr=1", "segment_seconds=2", "betas=[0, 1]"])
    assert config.lr == 1 and config.segment_seconds == 2 and config.betas == (0.0, 1.0)


@pytest.mark.parametrize("cls", [TrainConfig, SEANetConfig, CodebookOptions])
def test_every_default_round_trips_through_json_types(cls):
    default = cls()
    assert cls.from_dict(default.to_dict()) == default


WRONG = {int: [2.5, True, "3", None], float: [True, "0.1", None, [1.0]],
         bool: [1, 0, "true", None], str: [3, True, None]}


@given(data=st.data())
def test_any_field_refuses_a_value_of_another_type(data):
    config = TrainConfig()
    field = data.draw(st.sampled_from([f for f in fields(TrainConfig)
                                       if type(getattr(config, f.name)) in WRONG]))
    kind = type(getattr(config, field.name))
    value = data.draw(st.sampled_from(WRONG[kind]))
    assert not matches(value, kind)
    with pytest.raises(ValueError, match=f"training setting {field.name} must be"):
        TrainConfig.from_dict({**config.to_dict(), field.name: value})


def test_train_codec_refuses_bad_settings_and_step_limits_before_any_work(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train-codec", str(tmp_path), "-o", str(tmp_path / "run"),
                              "steps=2.5"])
    assert bad.exit_code == 2 and "steps must be an integer, got 2.5" in bad.output
    for limit in ("0", "-1"):
        refused = runner.invoke(app, ["train-codec", str(tmp_path), "-o",
                                      str(tmp_path / "run"), "--max-steps", limit])
        assert refused.exit_code == 2 and "max-steps" in refused.output
    assert not (tmp_path / "run").exists()
