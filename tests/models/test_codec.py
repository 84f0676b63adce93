import json
import math
from dataclasses import replace

import pytest
import torch

from mmdtok import Codec
from mmdtok.models import PRESETS, CodecConfig, preset
from mmdtok.testing import notes


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_encodes_decodes_and_round_trips_its_config(name):
    config = preset(name)
    assert CodecConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    codec = Codec.from_preset(name).for_inference()
    length = int(0.37 * codec.sample_rate)
    codes = codec.encode(notes(0.37, codec.sample_rate, channels=codec.channels)[None])
    frames = math.ceil(length / codec.hop_length)
    audio = codec.decode(codes)
    assert audio.shape == (1, codec.channels, frames * codec.hop_length)
    if codec.continuous:  # a latent [B, D, T], no codebooks to drop
        assert codes.shape == (1, codec.latent_dim, frames) and codes.dtype == torch.float32
        assert codec.decode(codes, length=length).shape[-1] == length
        return
    assert codes.shape == (1, codec.num_codebooks, frames) and codes.dtype == torch.int64
    assert codec.decode(codes[:, :2], length=length).shape[-1] == length


def test_musicgen_preset_has_the_published_size_and_rate():
    codec = Codec.from_preset("musicgen-32khz")
    params = sum(p.numel() for p in codec.parameters())
    assert 55e6 < params < 60e6
    assert codec.frame_rate == 50 and codec.num_codebooks * 11 * codec.frame_rate == 2200


def test_training_forward_reconstructs_the_input_length_and_trains_the_encoder():
    codec = Codec.from_preset("small-music")
    audio = notes(0.5, 24_000)[None].repeat(2, 1, 1)
    out = codec(audio)
    assert out.audio.shape == audio.shape
    assert out.quantized.streams.shape == (2, 4, 64, out.latent.shape[-1])
    loss = (out.audio - audio).abs().mean() + out.quantized.losses["commitment"]
    loss.backward()
    assert codec.encoder.layers[0].conv.parametrizations.weight.original1.grad.abs().sum() > 0


def test_encode_streams_has_gradients_and_leaves_codebooks_alone():
    codec = Codec.from_preset("small-music")
    audio = notes(0.5, 24_000)[None].repeat(2, 1, 1)
    codec.train()
    codec(audio)  # initializes the codebooks
    before = {k: v.clone() for k, v in codec.quantizer.state_dict().items()}
    streams = codec.encode_streams(audio)
    assert codec.quantizer.training
    for key, value in codec.quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key
    streams.pow(2).sum().backward()
    assert codec.encoder.layers[-1].conv.parametrizations.weight.original1.grad is not None


def test_bad_audio_is_refused_with_the_expected_shape():
    codec = Codec.from_preset("small-music")
    with pytest.raises(ValueError, match=r"\[B, 1, L>0\]"):
        codec.encode(torch.zeros(1, 2, 100))
    with pytest.raises(TypeError, match="floating point"):
        codec.encode(torch.zeros(1, 1, 100, dtype=torch.int16))
    with pytest.raises(ValueError, match="unknown codec preset"):
        preset("nope")


def test_config_rejects_unknown_keys_and_quantizers():
    data = preset("small-music").to_dict()
    with pytest.raises(ValueError, match="unknown SEANet config keys"):
        CodecConfig.from_dict({**data, "seanet": {**data["seanet"], "filters": 3}})
    with pytest.raises(ValueError, match="quantizer kind"):
        CodecConfig.from_dict({**data, "quantizer": {"kind": "lfq"}})
    with pytest.raises(ValueError, match="bad options.*'x'"):
        Codec.from_config(CodecConfig.from_dict({**data, "quantizer": {"kind": "rvq", "x": 1}}))
    with pytest.raises(ValueError, match=r"unknown codec config keys \['sample_rat'\]"):
        CodecConfig.from_dict({**data, "sample_rat": 16_000})
    codebook = {**data["quantizer"]["codebook"], "decya": 0.9}
    with pytest.raises(ValueError, match=r"unknown codebook option keys \['decya'\]"):
        Codec.from_config(CodecConfig.from_dict(
            {**data, "quantizer": {**data["quantizer"], "codebook": codebook}}))


def test_fingerprint_ignores_weight_norm_folding_but_not_weights():
    codec = Codec.from_preset("small-music")
    before = codec.fingerprint()
    assert codec.for_inference().fingerprint() == before
    with torch.no_grad():
        codec.decoder.layers[0].conv.weight.add_(1e-3)
    assert codec.fingerprint() != before


def _snake_codec() -> Codec:
    """small-music with Snake activations, their frequencies moved off the initial 1."""
    config = preset("small-music")
    codec = Codec.from_config(replace(config, seanet=replace(config.seanet,
                                                             activation="snake")))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in codec.named_parameters():
            if name.endswith("alpha"):
                parameter.uniform_(0.3, 3.0)
    return codec


def test_snake_activations_sit_where_elu_is_and_round_trip(tmp_path):
    codec = _snake_codec()
    alphas = [n for n, _ in codec.named_parameters() if n.endswith("alpha")]
    elus = [m for m in Codec.from_preset("small-music").modules()
            if isinstance(m, torch.nn.ELU)]
    assert len(alphas) == len(elus) > 0
    codec.save_pretrained(tmp_path)
    loaded = Codec.from_pretrained(tmp_path)
    assert loaded.config.seanet.activation == "snake"
    assert loaded.fingerprint() == codec.fingerprint()
    with pytest.raises(ValueError, match="activation must be one of"):
        replace(preset("small-music").seanet, activation="gelu")


@pytest.mark.parametrize("name", [*sorted(n for n in PRESETS if PRESETS[n].dac is None),
                                  "small-music+snake"])  # the time-major path is SEANet's
@pytest.mark.parametrize("length", [5, 3_333])
def test_time_major_inference_equals_the_layers_forward(name, length):
    codec = (_snake_codec() if name.endswith("snake") else Codec.from_preset(name)
             ).for_inference()
    audio = notes(length / codec.sample_rate + 1e-9, codec.sample_rate, seed=4,
                  channels=codec.channels)[None]
    audio = torch.cat([audio, -audio])
    latent = torch.randn(2, codec.config.seanet.dimension, 7)
    with torch.no_grad():
        fast = codec.encoder(audio), codec.decoder(latent)
        codec.for_inference(time_major=False)
        slow = codec.encoder(audio), codec.decoder(latent)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("causal, pad_mode, activation", [
    (False, "reflect", "elu"), (True, "reflect", "elu"), (False, "constant", "elu"),
    (True, "replicate", "elu"), (False, "reflect", "snake")])
def test_blocked_layers_equal_the_layers_forward_across_block_edges(monkeypatch, causal,
                                                                     pad_mode, activation):
    """Residual units and transposed convolutions computed in blocks of a few rows: the
    padding at both ends, the halo rows between blocks and the frames a transposed
    convolution gathers across blocks give the layers' own result (two residual units
    per stage: dilations 1 and 2)."""
    from mmdtok.models.layers import ResidualUnit
    from mmdtok.models.runtime import kernels

    monkeypatch.setattr(kernels, "BLOCK_BYTES", 256)
    fused = []
    original = ResidualUnit._fused
    monkeypatch.setattr(ResidualUnit, "_fused",
                        lambda *args: fused.append(1) or original(*args))
    cfg = preset("small-music")
    cfg = replace(cfg, seanet=replace(cfg.seanet, causal=causal, pad_mode=pad_mode,
                                      activation=activation, n_residual_layers=2))
    codec = Codec.from_config(cfg).for_inference()
    audio = notes(0.15, codec.sample_rate, seed=3)[None]
    audio = torch.cat([audio, -0.5 * audio])
    latent = torch.randn(2, cfg.seanet.dimension, 9)
    with torch.no_grad():
        fast = codec.encoder(audio), codec.decoder(latent)
        assert len(fused) == 2 * 2 * len(cfg.seanet.ratios)  # every unit, both halves
        codec.for_inference(time_major=False)
        slow = codec.encoder(audio), codec.decoder(latent)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_time_major_path_runs_only_when_prepared_and_follows_weight_changes(monkeypatch):
    from mmdtok.models.runtime import stack

    calls = []
    original = stack.run_time_major
    monkeypatch.setattr(stack, "run_time_major",
                        lambda layers, x, plan: calls.append(1) or original(layers, x, plan))
    codec = Codec.from_preset("small-music")
    audio = notes(0.5, codec.sample_rate, seed=2)[None]
    with torch.no_grad():
        codec.eval().encoder(audio)
        assert calls == []  # eval mode alone keeps the layers' own forward
        codec.for_inference()
        before = codec.encoder(audio)
        assert len(calls) == 2  # front and back stages
        codec.encoder.layers[0].conv.weight.mul_(2.0)  # in place, after the plan was built
        changed = codec.encoder(audio)
        codec.for_inference(time_major=False)
        reference = codec.encoder(audio)
    assert not torch.allclose(changed, before)
    torch.testing.assert_close(changed, reference, atol=1e-5, rtol=1e-4)
    codec.train()
    with torch.no_grad():
        calls.clear()
        codec.encoder(audio)
    assert calls == []  # training mode dropped the plans


def test_converting_a_prepared_codec_rebuilds_its_time_major_plans():
    codec = Codec.from_preset("small-music").for_inference().double()
    audio = notes(0.5, codec.sample_rate, seed=2)[None].double()
    with torch.no_grad():
        fast = codec.encoder(audio)
        codec.for_inference(time_major=False)
        slow = codec.encoder(audio)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
