"""Published EnCodec weights (transformers' EncodecModel layout) load into mmdtok and give
the same codes and audio. Models are built with random weights offline from the
configs of facebook/encodec_24khz and facebook/encodec_32khz."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmdtok import Codec
from mmdtok.testing import ENCODEC_CONFIGS, encodec_folder, notes

transformers = pytest.importorskip("transformers")

CONFIGS = ENCODEC_CONFIGS
CONFIG_48KHZ = {"sampling_rate": 48_000, "audio_channels": 2, "normalize": True,
                "chunk_length_s": 1.0, "overlap": 0.01, "norm_type": "time_group_norm",
                "use_causal_conv": False, "target_bandwidths": [3.0, 6.0, 12.0, 24.0]}


# The 24 kHz layout in the fast tier, the 32 kHz one (MusicGen's) in the slow tier.
@pytest.mark.parametrize("name", [name if name == "encodec_24khz" else
                                  pytest.param(name, marks=pytest.mark.slow)
                                  for name in sorted(CONFIGS)])
def test_encodec_weights_give_identical_codes_and_audio(name, tmp_path):
    reference = encodec_folder(CONFIGS[name], tmp_path)
    codec = Codec.from_pretrained(tmp_path)
    sr = reference.config.sampling_rate
    audio = torch.stack([notes(1.3, sr, seed=7), notes(1.3, sr, seed=8)])
    bandwidth = max(reference.config.target_bandwidths)
    with torch.no_grad():
        expected = reference.encode(audio, bandwidth=bandwidth)
        expected_audio = reference.decode(expected.audio_codes, expected.audio_scales)[0]
    codes = codec.encode(audio)
    assert codec.num_codebooks == reference.quantizer.get_num_quantizers_for_bandwidth(bandwidth)
    assert torch.equal(codes, expected.audio_codes[0])
    torch.testing.assert_close(codec.decode(codes), expected_audio, atol=1e-4, rtol=0)
    assert codec.sample_rate == sr and codec.origin == str(tmp_path.resolve())


def test_old_style_weight_norm_keys_convert_too(tmp_path):
    reference = encodec_folder(CONFIGS["encodec_24khz"], tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    renamed = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v
               for k, v in state.items()}
    save_file(renamed, tmp_path / "model.safetensors")
    codec = Codec.from_pretrained(tmp_path)
    audio = notes(0.5, 24_000, seed=3)[None]
    with torch.no_grad():
        expected = reference.encode(audio, bandwidth=24.0).audio_codes[0]
    assert torch.equal(codec.encode(audio), expected)


def test_the_48khz_stereo_model_is_refused_with_the_reason(tmp_path):
    config = transformers.EncodecConfig(**CONFIG_48KHZ)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"not supported.*normalize.*chunk_length_s"):
        Codec.from_pretrained(tmp_path)
