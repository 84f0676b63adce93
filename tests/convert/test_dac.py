"""Published DAC weights (transformers' DacModel layout) load into mmdtok and give the
same codes and audio. Models are built offline with random weights from the configs of
descript/dac_16khz, dac_24khz and dac_44khz."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mmdtok import Codec
from mmdtok.models import ChunkSettings, CodecConfig, DACConfig, decode_many, encode_many
from mmdtok.testing import DAC_CONFIGS, dac_folder, notes

transformers = pytest.importorskip("transformers")

# The 16 kHz layout (an odd ratio, 5) at a fraction of the width: fast, same code paths.
NARROW = {**DAC_CONFIGS["dac_16khz"], "encoder_hidden_size": 8, "decoder_hidden_size": 64,
          "n_codebooks": 4}


def _reference(reference, audio):
    """DacModel's codes and audio; its encoder needs a multiple of the hop, which DAC's
    preprocessing pads with zeros on the right."""
    audio = torch.nn.functional.pad(audio, (0, -audio.shape[-1] % reference.config.hop_length))
    with torch.no_grad():
        codes = reference.encode(audio).audio_codes
        return codes, reference.decode(audio_codes=codes).audio_values[:, None]


# The 16 kHz layout in the fast tier; the larger two (the same layers, more of them: seconds
# each to build with random weights) in the slow tier.
@pytest.mark.parametrize("name", [name if name == "dac_16khz" else
                                  pytest.param(name, marks=pytest.mark.slow)
                                  for name in sorted(DAC_CONFIGS)])
def test_published_dac_layouts_give_identical_codes_and_audio(name, tmp_path):
    reference = dac_folder(DAC_CONFIGS[name], tmp_path)
    codec = Codec.from_pretrained(tmp_path)
    sr = reference.config.sampling_rate
    audio = torch.stack([notes(0.4, sr, seed=7), notes(0.4, sr, seed=8)])
    expected_codes, expected_audio = _reference(reference, audio)
    codes = codec.encode(audio)
    assert codec.num_codebooks == reference.config.n_codebooks
    assert codec.hop_length == reference.config.hop_length and codec.sample_rate == sr
    assert torch.equal(codes, expected_codes)
    decoded = codec.decode(codes)
    assert decoded.shape[-1] == codes.shape[-1] * codec.hop_length
    n = expected_audio.shape[-1]  # DAC's own length (a few samples short with ratio 5)
    torch.testing.assert_close(decoded[..., :n], expected_audio, atol=1e-5, rtol=0)
    assert not decoded[..., n:].any()
    assert codec.config.to_dict()["quantizer"] == {
        "kind": "factorized", "num_codebooks": reference.config.n_codebooks,
        "codebook_size": 1024, "codebook_dim": 8}


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dac-narrow")
    return dac_folder(NARROW, folder), Codec.from_pretrained(folder), folder


@settings(max_examples=12, deadline=None)
@given(length=st.integers(1, 2_000), n_q=st.integers(1, 4))
def test_any_length_gives_ceil_frames_and_the_reference_codes(narrow, length, n_q):
    reference, codec, _ = narrow
    audio = notes(0.2, 16_000, seed=length)[None, :, :length]
    padded = torch.nn.functional.pad(audio, (0, -length % 320))  # as in _reference
    with torch.no_grad():
        expected = reference.encode(padded, n_quantizers=n_q).audio_codes
    codes = codec.encode(audio, n_q=n_q)
    assert codes.shape == (1, n_q, -(-length // 320))
    assert torch.equal(codes, expected[:, :n_q])


def test_chunked_encoding_and_decoding_equal_one_pass(narrow):
    _, codec, _ = narrow
    audio = notes(3.0, 16_000, seed=4)
    small = ChunkSettings(window=30, piece=8)  # above the decoder context, 22 frames
    codes = codec.encode(audio[None])[0]
    assert torch.equal(encode_many(codec, [audio], settings=small)[0], codes)
    whole = codec.decode(codes[None])[0]
    torch.testing.assert_close(decode_many(codec, [codes], settings=small)[0], whole,
                               atol=1e-5, rtol=0)


def test_old_style_weight_norm_keys_and_a_round_trip_in_mmdtok_format(narrow, tmp_path):
    reference, codec, folder = narrow
    state = load_file(folder / "model.safetensors")
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((folder / "config.json").read_text())
    save_file({k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v
               for k, v in state.items()}, old / "model.safetensors")
    audio = notes(0.5, 16_000, seed=3)[None]
    expected, _ = _reference(reference, audio)
    assert torch.equal(Codec.from_pretrained(old).encode(audio), expected)
    codec.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["codec"]
    assert "dac" in saved and "seanet" not in saved
    again = Codec.from_pretrained(tmp_path / "saved")
    assert again.config == codec.config and again.fingerprint() == codec.fingerprint()


def test_a_dac_codec_trains_with_the_factorized_quantizer():
    config = CodecConfig(name="dac-tiny", sample_rate=16_000,
                         dac=DACConfig(encoder_dim=4, decoder_dim=32, ratios=(2, 4, 5)),
                         quantizer={"kind": "factorized", "num_codebooks": 3,
                                    "codebook_size": 64, "codebook_dim": 4,
                                    "codebook_dropout": "uniform"})
    torch.manual_seed(0)
    codec = Codec.from_config(config).train()
    audio = torch.stack([notes(0.25, 16_000, seed=s) for s in range(4)])
    out = codec(audio)
    assert out.audio.shape == audio.shape
    assert out.quantized.streams.shape == (4, 3, 4, 100)  # [B, K, d, T], hop 40
    assert set(out.quantized.losses) == {"commitment", "codebook"}
    assert out.quantized.num_kept.min() >= 1
    loss = (out.audio - audio).abs().mean() + sum(out.quantized.losses.values())
    loss.backward()
    for name in ("encoder.conv1.parametrizations.weight.original1",
                 "quantizer.quantizers.0.codebook.weight",
                 "quantizer.quantizers.0.in_proj.parametrizations.weight.original1"):
        grad = dict(codec.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the streams carry a gradient to the encoder (what IndependenceLoss needs)
    codec.zero_grad()
    codec.encode_streams(audio).pow(2).sum().backward()
    assert codec.encoder.conv1.parametrizations.weight.original1.grad.abs().sum() > 0


def test_bad_dac_configs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="both 'seanet' and 'dac'"):
        CodecConfig.from_dict({"name": "x", "sample_rate": 16_000, "seanet": {}, "dac": {}})
    with pytest.raises(ValueError, match="divisible"):
        DACConfig(decoder_dim=100)
    with pytest.raises(ValueError, match="codebook_dim"):
        Codec.from_config(CodecConfig(name="x", sample_rate=16_000, dac=DACConfig(
            encoder_dim=4, decoder_dim=32, ratios=(2, 4)), quantizer={
                "kind": "factorized", "codebook_dim": 0}))
    from mmdtok.convert import codec_config_from_dac
    with pytest.raises(ValueError, match="hidden_size"):
        codec_config_from_dac({"model_type": "dac", "hidden_size": 512})


# small-dac's architecture, as a DacModel folder (with DAC's quantizer dropout).
SMALL = {"sampling_rate": 24_000, "downsampling_ratios": [2, 4, 5, 8], "n_codebooks": 4,
         "encoder_hidden_size": 8, "decoder_hidden_size": 128, "quantizer_dropout": 0.5}


def test_fine_tuning_dac_weights_then_the_cli_on_its_token_files(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from mmdtok.cli import app
    from mmdtok.tokens import load_tokens
    from mmdtok.train.config import TrainConfig
    from mmdtok.train.loop import train

    dac_folder(SMALL, tmp_path / "dac")
    start = Codec.from_pretrained(tmp_path / "dac")
    weights = [1 / 8] * 3 + [0.5 + 1 / 8]  # half the batch keeps 1..4 codebooks uniformly
    assert start.config.quantizer["codebook_dropout"] == pytest.approx(weights)
    config = TrainConfig(codec="small-dac", init_from=str(tmp_path / "dac"), steps=2,
                         batch_size=2, segment_seconds=0.25, warmup_steps=1,
                         checkpoint_every=2, independence=True, independence_every=1,
                         calibration_batches=1, valid_every=0, discriminator_filters=4)
    train(config, [tiny_corpus[0] / "manifest.jsonl"], tmp_path / "run")
    tuned = Codec.from_pretrained(tmp_path / "run")
    before, after = start.state_dict(), tuned.state_dict()
    for name in ("quantizer.quantizers.0.codebook.weight", "encoder.conv1.weight"):
        assert not torch.equal(before[name], after[name]), f"{name} did not learn"

    song = next((tiny_corpus[0]).rglob("*.flac"), None) or next(tiny_corpus[0].rglob("*.wav"))

    def invoke(*args):
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    invoke("encode", song, "-o", tmp_path / "tok", "--model", tmp_path / "run")
    token_file = next((tmp_path / "tok").rglob("*.mmdtok"))
    tokens = load_tokens(token_file)
    assert tokens.codes.shape[0] == 4 and tokens.codebook_size == 1024
    assert torch.equal(tokens.codes, tuned.encode(_read(song, tuned))[0])
    invoke("decode", tmp_path / "tok", "-o", tmp_path / "dec", "--model", tmp_path / "run")
    decoded = next((tmp_path / "dec").rglob("*.wav"))
    import soundfile
    assert soundfile.info(decoded).frames == tokens.length
    assert "codebook" in invoke("inspect", tmp_path / "tok")


def _read(path, codec):
    from mmdtok.audio import load_audio
    return load_audio(path, codec.sample_rate, codec.channels)[0][None]


def test_independence_loss_takes_the_factorized_streams(narrow):
    from mmdtok import IndependenceLoss

    _, codec, _ = narrow
    codec = Codec.from_config(codec.config)  # trainable copy
    audio = torch.stack([notes(1.0, 16_000, seed=s) for s in range(4)])
    streams = codec.encode_streams(audio)
    assert streams.shape == (4, 4, 8, 50)
    loss = IndependenceLoss.from_preset("rff", seed=0)(streams)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert codec.quantizer.quantizers[1].in_proj.parametrizations.weight.original1.grad.abs(
    ).sum() > 0


# slow tier: a full ONNX export (torch.export traces for about 20 s at any size)
@pytest.mark.slow
def test_a_dac_codec_exports_to_onnx_with_identical_codes(tmp_path):
    pytest.importorskip("onnxruntime")
    from mmdtok.export import export_onnx

    torch.manual_seed(0)
    codec = Codec.from_preset("small-dac").for_inference()
    result = export_onnx(codec, tmp_path / "onnx")
    # the export's own check: both graphs against mmdtok at shapes other than the traced
    assert result.check is not None and result.check.codes_equal == 1.0
    assert result.check.audio_max_abs_diff < 1e-4
    assert result.metadata["config"]["dac"]["ratios"] == [2, 4, 5, 8]
    assert result.metadata["min_samples"] == 1
