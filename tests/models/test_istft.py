"""The frame-rate decoder (Vocos' ConvNeXt backbone and ISTFT head): the published
architecture, checked against the ``vocos`` package's own modules; behind the decoder
contract (exact length, chunking, ONNX, save/load, bad input, streaming refused)."""

import importlib
import math
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok import Codec
from mmdtok.convert.vocos import convert_vocos_state
from mmdtok.models import ChunkSettings, ISTFTConfig, ISTFTDecoder, decode_many, preset
from mmdtok.models.layers.istft import ISTFTHead, inverse_dft_basis
from mmdtok.streaming import NotStreamable, StreamingDecoder
from mmdtok.testing import notes, tiny_vae, trained_codebooks


def _vocos():
    """The ``vocos`` package's modules (VocosBackbone, ISTFTHead), imported without
    torchaudio. ``vocos/__init__.py`` and ``vocos/heads.py`` import torchaudio (for the
    pretrained loader and the mel helpers of another head), and PyPI's torchaudio does
    not import beside CPU torch; neither is used by the two modules under test. So the
    package is entered by its path, and the two torchaudio names ``heads.py`` imports are
    stand-ins that the ISTFT head never calls."""
    spec = importlib.util.find_spec("vocos")
    if spec is None:
        pytest.fail("the vocos package is missing: pip install --no-deps vocos")
    saved = {name: sys.modules.get(name) for name in
             ("vocos", "torchaudio", "torchaudio.functional", "torchaudio.functional.functional")}
    package = types.ModuleType("vocos")
    package.__path__ = list(spec.submodule_search_locations)
    functional = types.ModuleType("torchaudio.functional.functional")
    functional._hz_to_mel = functional._mel_to_hz = None
    sys.modules.update({"vocos": package, "torchaudio": types.ModuleType("torchaudio"),
                        "torchaudio.functional": types.ModuleType("torchaudio.functional"),
                        "torchaudio.functional.functional": functional})
    try:
        models = importlib.import_module("vocos.models")
        heads = importlib.import_module("vocos.heads")
        return models.VocosBackbone, heads.ISTFTHead
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.mark.parametrize("n_fft, hop, blocks", [(1280, 320, 8), (1024, 256, 3), (960, 320, 2)])
def test_the_decoder_is_vocos_backbone_and_istft_head(n_fft, hop, blocks):
    backbone_cls, head_cls = _vocos()
    torch.manual_seed(n_fft)
    backbone = backbone_cls(input_channels=32, dim=48, intermediate_dim=144,
                            num_layers=blocks).eval()
    head = head_cls(dim=48, n_fft=n_fft, hop_length=hop, padding="same").eval()
    for module in (backbone, head):  # not the zero biases and 1/n scales of the start
        for p in module.parameters():
            p.data.normal_(0, 0.05)
    ours = ISTFTDecoder(ISTFTConfig(dim=48, intermediate=144, blocks=blocks, n_fft=n_fft),
                        latent_dim=32, hop=hop, channels=1).eval()
    ours.load_state_dict(convert_vocos_state(backbone.state_dict(), head.state_dict()))
    latent = torch.randn(2, 32, 41)
    with torch.no_grad():
        expected = head(backbone(latent))
        assert expected.shape == (2, 41 * hop)  # Vocos' "same" padding: T * hop samples
        whole = ours(latent)
        ours.prepare_cpu_inference()  # the time-major CPU plan
        fast = ours(latent)
    assert whole.shape == fast.shape == (2, 1, 41 * hop)
    torch.testing.assert_close(whole[:, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_conversion_refuses_what_has_no_place():
    backbone_cls, head_cls = _vocos()
    conditioned = backbone_cls(input_channels=8, dim=16, intermediate_dim=32, num_layers=2,
                               adanorm_num_embeddings=4)
    head = head_cls(dim=16, n_fft=64, hop_length=16).state_dict()
    with pytest.raises(ValueError, match="adaptive layer norm is not supported"):
        convert_vocos_state(conditioned.state_dict(), head)
    plain = backbone_cls(input_channels=8, dim=16, intermediate_dim=32, num_layers=2)
    with pytest.raises(ValueError, match="only the ISTFT head"):
        convert_vocos_state(plain.state_dict(), {**head, "extra.weight": torch.zeros(1)})
    state = {k.replace("convnext.1.", "convnext.5."): v for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="not numbered"):
        convert_vocos_state(state, head)


@settings(max_examples=20, deadline=None)
@given(extra=st.integers(1, 24), hop=st.sampled_from([4, 6, 10]),
       frames=st.integers(1, 12), channels=st.integers(1, 2))
def test_the_exported_form_equals_the_fft_form(extra, hop, frames, channels):
    """The transposed convolution with the windowed inverse-DFT basis (export) is the
    same inverse STFT as irfft and the overlap-add of shifted slices, for any window a
    multiple of the hop or not."""
    n_fft = hop + 2 * extra  # even, more than the hop
    head = ISTFTHead(8, n_fft, hop, channels).double()
    x = torch.randn(2, 8, frames, dtype=torch.float64)
    with torch.no_grad():
        fft = head(x)
        head.prepare_export()
        exported = head(x)
    assert fft.shape == exported.shape == (2, channels, frames * hop)
    torch.testing.assert_close(exported, fft, atol=1e-6, rtol=1e-6)  # a float32 basis


def test_the_basis_is_irfft_with_the_window():
    n_fft = 48
    imag = torch.randn(n_fft // 2 + 1, dtype=torch.float64)
    imag[0] = imag[-1] = 0  # irfft ignores the imaginary parts of DC and Nyquist
    spectrum = torch.complex(torch.randn(n_fft // 2 + 1, dtype=torch.float64), imag)
    coefficients = torch.cat([spectrum.real, spectrum.imag])
    expected = torch.fft.irfft(spectrum, n_fft) * torch.hann_window(n_fft, periodic=True,
                                                                     dtype=torch.float64)
    torch.testing.assert_close(coefficients @ inverse_dft_basis(n_fft), expected)


def test_bad_head_sizes_are_refused():
    for n_fft, hop in ((1281, 320), (300, 320), (320, 320), (1279, 320)):
        with pytest.raises(ValueError, match="n_fft must be even"):
            ISTFTHead(8, n_fft, hop)
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        ISTFTConfig(blocks=0)


def _istft_codec(**changes) -> Codec:
    """small-music's encoder and codebooks (fitted to its latents) with a frame-rate
    decoder of random weights."""
    config = replace(preset("small-music"), istft=ISTFTConfig(**changes))
    return trained_codebooks(config)


@pytest.fixture(scope="module")
def codec():
    return _istft_codec(dim=64, intermediate=128, blocks=3)


@settings(max_examples=15, deadline=None)
@given(frames=st.integers(1, 40), n_q=st.integers(1, 4), batch=st.integers(1, 2))
def test_every_decode_is_frames_times_hop_samples(codec, frames, n_q, batch):
    codes = torch.randint(0, codec.codebook_size, (batch, n_q, frames))
    audio = codec.decode(codes)
    assert audio.shape == (batch, 1, frames * codec.hop_length)
    assert torch.isfinite(audio).all()
    length = max(1, frames * codec.hop_length - 17)
    assert codec.decode(codes, length=length).shape[-1] == length


@pytest.mark.parametrize("piece", [1, 7, 100])
def test_chunked_decoding_equals_one_pass(codec, piece):
    """The decoder's reach (3 frames a layer, the window's overlap at the end) gives each
    piece the context it needs: exact at any piece size (pieces of at least 12 times that
    reach, several in 6 s), the first and last included."""
    music = notes(6.0, codec.sample_rate, seed=3)
    codes = codec.encode(music[None])[0]
    whole = codec.decode(codes[None])[0]
    chunked = decode_many(codec, [codes, codes[:, :5]], lengths=[None, 1_000],
                          settings=ChunkSettings(piece=piece))
    assert chunked[0].shape == whole.shape and chunked[1].shape == (1, 1_000)
    torch.testing.assert_close(chunked[0], whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked[1], codec.decode(codes[None, :, :5])[0, :, :1_000],
                               atol=1e-5, rtol=0)


def test_bad_codes_and_latents_are_refused_with_the_reason(codec):
    codes = torch.randint(0, codec.codebook_size, (1, codec.num_codebooks, 10))
    with pytest.raises(ValueError, match="codes must lie in"):
        codec.decode(codes + codec.codebook_size)
    with pytest.raises(ValueError, match="codebooks"):
        codec.decode(torch.zeros(1, codec.num_codebooks + 1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="frame|empty"):
        codec.decode(codes[..., :0])
    vae = tiny_vae(channels=1)  # a continuous codec decodes latents with the same decoder
    vae = Codec.from_config(replace(vae.config, istft=ISTFTConfig(dim=16, intermediate=32,
                                                                  blocks=1, n_fft=64)))
    latent = torch.randn(1, vae.latent_dim, 10)
    assert vae.decode(latent).shape == (1, 1, 10 * vae.hop_length)
    latent[0, 3, 4] = math.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        vae.decode(latent)


def test_the_decoder_refuses_to_stream_and_says_why(codec):
    with pytest.raises(NotStreamable, match="looks ahead"):
        codec.decoder.streamer()
    causal = trained_codebooks(replace(preset("small-music-causal"), istft=ISTFTConfig(
        dim=32, intermediate=64, blocks=1)))
    with pytest.raises(NotStreamable, match="decoder.*(inverse STFT|looks ahead)"):
        StreamingDecoder(causal)


def test_save_load_and_the_fingerprint(codec, tmp_path):
    codec.save_pretrained(tmp_path / "model")
    loaded = Codec.from_pretrained(tmp_path / "model")
    assert loaded.config == codec.config and loaded.config.istft == codec.config.istft
    assert isinstance(loaded.decoder, ISTFTDecoder)
    codes = torch.randint(0, codec.codebook_size, (1, codec.num_codebooks, 30))
    torch.testing.assert_close(loaded.decode(codes), codec.decode(codes), atol=1e-6, rtol=0)
    assert loaded.fingerprint() == codec.fingerprint()
    # another decoder width is another codec
    assert _istft_codec(dim=32, intermediate=64, blocks=1).fingerprint() != codec.fingerprint()


def test_the_decoder_exports_to_onnx_and_runs_in_onnxruntime(codec, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from mmdtok.models.runtime.export import DECODER, export_onnx

    result = export_onnx(codec, tmp_path / "onnx", check=False)
    session = onnxruntime.InferenceSession(Path(result.folder) / DECODER,
                                           providers=["CPUExecutionProvider"])
    for frames in (result.metadata["min_frames"], 97):  # other sizes than the traced one
        codes = torch.randint(0, codec.codebook_size, (2, codec.num_codebooks, frames))
        ours = session.run(None, {session.get_inputs()[0].name: codes.numpy()})[0]
        expected = codec.decode(codes).numpy()
        assert ours.shape == expected.shape == (2, 1, frames * codec.hop_length)
        assert np.abs(ours - expected).max() < 1e-4
