"""A codec is encoder + quantizer + decoder: audio [B, C, L] <-> codes [B, K, T].

The architecture knows nothing of files or the Hub: :class:`mmdtok.Codec` (in
:mod:`mmdtok.persistence`) is this class with ``from_pretrained``, ``save_pretrained`` and
``push_to_hub`` on top.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from mmdtok.limits import check_integer
from mmdtok.models.config import CodecConfig, build_quantizer
from mmdtok.models.dac import DACDecoder, DACEncoder
from mmdtok.models.istft import ISTFTDecoder
from mmdtok.models.layers import fold_weight_norm
from mmdtok.models.presets import preset
from mmdtok.models.seanet import SEANetDecoder, SEANetEncoder
from mmdtok.quantizers import Quantizer, QuantizerOutput


@dataclass(frozen=True)
class CodecOutput:
    """What ``Codec.forward`` returns in training.

    audio: [B, C, L] reconstruction (same length as the input).
    latent: [B, D, T] encoder output. quantized: the quantizer's output (codes, streams,
    losses, metrics).
    """

    audio: Tensor
    latent: Tensor
    quantized: QuantizerOutput


class CodecModel(nn.Module):
    """Encoder + quantizer + decoder.

    ``encode(audio [B, C, L]) -> codes [B, K, ceil(L / hop)]`` and
    ``decode(codes) -> audio [B, C, T * hop]`` run the whole input in one pass; long
    files and lists of files go through :mod:`mmdtok.models.runtime.chunked` instead, which
    gives the same codes in bounded memory.
    """

    def __init__(self, encoder: SEANetEncoder | DACEncoder, quantizer: Quantizer,
                 decoder: SEANetDecoder | DACDecoder | ISTFTDecoder,
                 config: CodecConfig) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.config = config
        self.origin = ""  # where the weights were loaded from (see mmdtok.persistence)

    @classmethod
    def from_config(cls, config: CodecConfig) -> CodecModel:
        """Fresh (untrained) weights for ``config``."""
        quantizer = build_quantizer(config)
        if config.dac is not None:
            encoder, decoder = DACEncoder(config.dac, quantizer.input_dim), DACDecoder(config.dac)
        else:
            encoder = SEANetEncoder(config.seanet, quantizer.input_dim)
            decoder = SEANetDecoder(config.seanet)
        if config.istft is not None:  # the frame-rate decoder in place of the network's
            decoder = ISTFTDecoder(config.istft, quantizer.dim, config.hop_length,
                                   config.channels)
        return cls(encoder, quantizer, decoder, config)

    @classmethod
    def from_preset(cls, name: str) -> CodecModel:
        """Fresh (untrained) weights for the preset ``name`` (``mmdtok.models.PRESETS``)."""
        return cls.from_config(preset(name))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def continuous(self) -> bool:
        """True when the bottleneck is continuous (a VAE): ``encode`` then returns a latent
        [B, D, T] (float) and ``decode`` takes one, in place of codes."""
        return self.quantizer.continuous

    @property
    def latent_dim(self) -> int:
        """Channels D of the latent the decoder reads."""
        return self.quantizer.dim

    def check_audio(self, audio: Tensor, finite: bool = False) -> None:
        """TypeError or ValueError naming what is wrong with audio [B, C, L]; ``finite``
        also refuses NaN and infinite samples (a pass over the data, made where inference
        starts)."""
        if not isinstance(audio, Tensor):
            raise TypeError(f"audio must be a tensor [B, C, L], got {type(audio).__name__}")
        if audio.dim() != 3 or audio.shape[1] != self.channels or audio.shape[-1] == 0:
            raise ValueError(f"audio must be [B, {self.channels}, L>0] for this "
                             f"{self.channels}-channel codec, got {tuple(audio.shape)}")
        if audio.shape[0] == 0:
            raise ValueError("audio is a batch of 0: give at least one item")
        if not audio.is_floating_point():
            raise TypeError(f"audio must be floating point, got {audio.dtype}")
        if finite and not bool(torch.isfinite(audio).all()):
            raise ValueError("the audio contains NaN or infinite samples")

    def check_codes(self, codes: Tensor, length: int | None = None) -> Tensor:
        """The codes (a continuous codec: the latent) [B, K', T] as the decoder takes
        them, after checking them (:meth:`Quantizer.checked_codes`, at least one item and
        one frame) and ``length`` (None, or an integer in 0..T * hop: the samples kept);
        TypeError or ValueError naming what is wrong."""
        codes = self.quantizer.checked_codes(codes)
        if codes.shape[0] == 0 or codes.shape[-1] == 0:
            raise ValueError(f"codes must hold at least one item and one frame, got shape "
                             f"{tuple(codes.shape)}")
        if length is not None:
            check_integer("length", length, 0, codes.shape[-1] * self.hop_length)
        return codes

    def _same_dtype(self, audio: Tensor) -> None:
        dtype = next(self.parameters()).dtype
        if audio.dtype != dtype:
            raise TypeError(f"audio is {audio.dtype} and the codec {dtype}: convert one "
                            f"(audio.to({dtype}) or codec.to({audio.dtype}))")

    def forward(self, audio: Tensor) -> CodecOutput:
        """Training pass: reconstruction, latent and quantizer output."""
        self.check_audio(audio)
        self._same_dtype(audio)
        latent = self.encoder(audio)
        quantized = self.quantizer(latent)
        decoded = self.decoder(quantized.quantized)[..., : audio.shape[-1]]
        return CodecOutput(audio=decoded, latent=latent, quantized=quantized)

    def encode_streams(self, audio: Tensor) -> Tensor:
        """Per-codebook streams [B, K, D_k, T] with gradients to the encoder, without
        updating codebook statistics: what :class:`~mmdtok.IndependenceLoss` takes."""
        self.check_audio(audio)
        self._same_dtype(audio)
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer(self.encoder(audio)).streams
        finally:
            self.quantizer.train(was_training)

    @torch.inference_mode()
    def encode(self, audio: Tensor, n_q: int | None = None) -> Tensor:
        """Codes [B, K, T] (K = ``n_q`` or all) of audio [B, C, L] at ``sample_rate``; for
        a continuous codec the latent [B, D, T] (the posterior mean; ``n_q`` unset).
        Floating-point audio of another dtype is converted to the codec's."""
        self.check_audio(audio, finite=True)
        n_q = self.quantizer.resolve_n_q(n_q)
        audio = audio.to(next(self.parameters()).dtype)
        return self.quantizer.encode_latent(self.encoder(audio), n_q)

    @torch.inference_mode()
    def decode(self, codes: Tensor, length: int | None = None) -> Tensor:
        """Audio [B, C, T * hop] (or the first ``length`` samples) from codes [B, K', T];
        K' <= K codebooks (a prefix) is a lower bitrate. A continuous codec takes its
        latent [B, D, T]. ``length``: an integer in 0..T * hop."""
        codes = self.check_codes(codes, length)
        audio = self.decoder(self.quantizer.decode_codes(codes))
        return audio if length is None else audio[..., :length]

    def for_inference(self, time_major: bool = True) -> CodecModel:
        """Eval mode with weight norm folded into plain weights (same output, faster).
        ``time_major``: also prepare the faster CPU path of the convolution stages
        (:mod:`mmdtok.models.runtime.kernels`, used without gradients on a CPU; the same
        output up to float rounding); switching to training mode drops it. In place;
        returns ``self``."""
        self.eval()
        fold_weight_norm(self)
        for half in (self.encoder, self.decoder):
            half.prepare_cpu_inference() if time_major else half.drop_cpu_inference()
        return self

    def folded_copy(self) -> CodecModel:
        """A new codec of the same class, config, dtype and device holding this one's
        weights with weight norm folded, in eval mode; this one is left as it is. (Not
        ``copy.deepcopy``: a deep copy of a weight-norm layer shares its parametrized
        class, and folding the copy would take the weights off the original.)"""
        reference = next(self.parameters())
        with torch.device("meta"):  # no random initialization of weights replaced below
            twin = type(self).from_config(self.config)
        twin.to_empty(device=reference.device).to(dtype=reference.dtype)
        state = _folded_state(self.state_dict())
        twin.load_weights(state)
        own = dict(self.named_buffers())
        for name, buffer in twin.named_buffers():  # the non-persistent ones (not saved)
            if name not in state and name in own:
                buffer.copy_(own[name])
        twin.origin = self.origin
        return twin.eval()

    def load_weights(self, state: dict[str, Tensor]) -> CodecModel:
        """Load weights saved with or without weight norm (folded), or with some layers
        folded (a decoder-only run's fixed encoder): each layer whose weight the state
        holds folded is folded first. ValueError naming missing or unexpected keys.
        Returns ``self``."""
        for name, module in self.named_modules():
            if f"{name}.weight" in state and parametrize.is_parametrized(module, "weight"):
                fold_weight_norm(module)
        own = self.state_dict()
        wrong = [f"{name} is {list(tensor.shape)}, the config makes {list(own[name].shape)}"
                 for name, tensor in state.items()
                 if name in own and own[name].shape != tensor.shape]
        if wrong:
            raise ValueError(f"weights do not match the codec config: {len(wrong)} tensor(s) "
                             f"of another shape, e.g. {wrong[0]}")
        result = self.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"weights do not match the codec config: missing "
                             f"{result.missing_keys[:5]}, unexpected "
                             f"{result.unexpected_keys[:5]}")
        return self

    def fingerprint(self) -> str:
        """A hash of all the weights as used for inference (independent of weight norm
        being folded or not): what the decoded audio depends on. Decoded audio files
        carry it; see :meth:`codes_fingerprint` for what token files are checked by."""
        return _digest(_folded_state(self.state_dict()))

    def codes_fingerprint(self) -> str:
        """A hash of what the codes (a continuous codec: the latents) mean: the encoder's
        and quantizer's weights (codebooks, latent norm) and the settings they run by,
        everything but the decoder. Two codecs that share it make the same codes from the
        same audio and read them as the same vectors, so a token file written by one
        decodes with the other (a decoder trained with ``trainable=decoder``, of the same
        kind or another, behind the same codes); any other codec's files are refused."""
        state = {k: v for k, v in _folded_state(self.state_dict()).items()
                 if not k.startswith("decoder.")}
        settings = {k: v for k, v in self.config.to_dict().items()
                    if k not in {"name", "istft"}}
        return _digest(state, json.dumps(settings, sort_keys=True))


def _digest(state: dict[str, Tensor], prefix: str = "") -> str:
    digest = hashlib.sha256(prefix.encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _folded_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with each weight-norm pair (g, v) replaced by ``g * v / ||v||`` (norm
    over all but the first axis, as torch's weight norm with dim 0): the weights of the
    folded model, computed without building one (and without touching any RNG). A state
    without weight norm comes back unchanged."""
    folded = {}
    for name, tensor in state.items():
        if name.endswith(".parametrizations.weight.original1"):
            prefix = name[: -len(".parametrizations.weight.original1")]
            g = state[f"{prefix}.parametrizations.weight.original0"]
            # the function torch's weight-norm parametrization calls: bit-identical
            folded[f"{prefix}.weight"] = torch._weight_norm(tensor, g, 0)
        elif not name.endswith(".parametrizations.weight.original0"):
            folded[name] = tensor
    return folded


def unfolded_state(state: dict[str, Tensor], like: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`_folded_state`: ``state`` with every folded weight ``w``
    that ``like`` (a codec's state with weight norm) holds as a weight-norm pair turned
    into that pair, ``g = ||w||`` (over all but the first axis) and ``v = w``. The same
    function, trainable with weight norm again."""
    unfolded = {}
    for name, value in state.items():
        pair = f"{name.removesuffix('.weight')}.parametrizations.weight.original"
        if name.endswith(".weight") and f"{pair}0" in like and f"{pair}0" not in state:
            norm = value.flatten(1).norm(dim=1).view(-1, *[1] * (value.ndim - 1))
            unfolded[f"{pair}0"], unfolded[f"{pair}1"] = norm, value
        else:
            unfolded[name] = value
    return unfolded
