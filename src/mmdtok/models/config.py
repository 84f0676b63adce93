"""A codec's configuration: a JSON-serializable dataclass, and the quantizer it names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmdtok.configuration import describe
from mmdtok.models.dac import DACConfig
from mmdtok.models.istft import ISTFTConfig
from mmdtok.models.seanet import SEANetConfig
from mmdtok.quantizers import (
    FSQ,
    CodebookOptions,
    FactorizedRVQ,
    ProductVQ,
    Quantizer,
    ResidualVQ,
    VAEBottleneck,
)

QUANTIZERS: dict[str, type[Quantizer]] = {"rvq": ResidualVQ, "pvq": ProductVQ, "fsq": FSQ,
                                          "vae": VAEBottleneck, "factorized": FactorizedRVQ}
_FIELDS = ("name", "sample_rate", "seanet", "dac", "quantizer", "istft")


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to rebuild a codec; round-trips through JSON (``to_dict``).

    seanet / dac: the network. ``dac`` set (a :class:`~mmdtok.models.dac.DACConfig`)
        makes a DAC encoder and decoder and ``seanet`` is not used; else SEANet's.
    quantizer: ``{"kind": "rvq" | "pvq" | "fsq" | "vae" | "factorized", **keywords}``;
        the keywords go to the quantizer's constructor (``dim`` is the network's latent
        dimension), ``"codebook"`` as the fields of a
        :class:`~mmdtok.quantizers.CodebookOptions`. ``"vae"`` is the continuous
        bottleneck (:class:`~mmdtok.quantizers.VAEBottleneck`): the encoder then emits
        twice the latent dimension (mean and scale). ``"factorized"`` is DAC's
        (:class:`~mmdtok.quantizers.FactorizedRVQ`).
    istft: set (an :class:`~mmdtok.models.istft.ISTFTConfig`), the decoder is the
        frame-rate one with an inverse STFT (Vocos' design) in place of the network's;
        the encoder and the quantizer stay the network's.
    """

    name: str
    sample_rate: int
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: dict[str, Any] = field(
        default_factory=lambda: {"kind": "rvq", "num_codebooks": 4, "codebook_size": 2048})
    dac: DACConfig | None = None
    istft: ISTFTConfig | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        kind = self.quantizer.get("kind")
        if kind not in QUANTIZERS:
            raise ValueError(f"quantizer kind must be one of {sorted(QUANTIZERS)}, got {kind!r}")

    @property
    def network(self) -> SEANetConfig | DACConfig:
        """The encoder/decoder architecture: ``dac`` when set, else ``seanet``."""
        return self.dac if self.dac is not None else self.seanet

    @property
    def channels(self) -> int:
        return self.network.channels

    @property
    def hop_length(self) -> int:
        return self.network.hop_length

    @property
    def causal(self) -> bool:
        return self.network.causal

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        network = ({"dac": self.dac.to_dict()} if self.dac is not None
                   else {"seanet": self.seanet.to_dict()})
        decoder = {"istft": self.istft.to_dict()} if self.istft is not None else {}
        return {"name": self.name, "sample_rate": self.sample_rate, **network,
                "quantizer": dict(self.quantizer), **decoder}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """The config of ``to_dict``'s output; ValueError naming a missing or unknown key."""
        missing = {"name", "sample_rate"} - set(data)
        if missing:
            raise ValueError(f"codec config lacks {sorted(missing)}")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown codec config keys {sorted(unknown)}; known: "
                             f"{list(_FIELDS)}")
        if "seanet" in data and "dac" in data:
            raise ValueError("codec config has both 'seanet' and 'dac': one network only")
        for key, kind in (("name", str), ("sample_rate", int), ("seanet", dict),
                          ("dac", dict), ("quantizer", dict), ("istft", dict)):
            if key in data and (not isinstance(data[key], kind)
                                or isinstance(data[key], bool)):
                raise ValueError(f"codec config {key} must be {describe(kind)}, got "
                                 f"{data[key]!r}")
        return cls(name=data["name"], sample_rate=data["sample_rate"],
                   seanet=SEANetConfig.from_dict(dict(data.get("seanet", {}))),
                   quantizer=dict(data.get("quantizer", {"kind": "rvq"})),
                   dac=DACConfig.from_dict(dict(data["dac"])) if "dac" in data else None,
                   istft=(ISTFTConfig.from_dict(dict(data["istft"])) if "istft" in data
                          else None))


def build_quantizer(config: CodecConfig) -> Quantizer:
    """The quantizer ``config.quantizer`` names; ValueError naming a bad option."""
    options = {k: v for k, v in config.quantizer.items() if k != "kind"}
    if "codebook" in options:
        if not isinstance(options["codebook"], dict):
            raise ValueError(f"quantizer codebook must be an object of options, got "
                             f"{options['codebook']!r}")
        options["codebook"] = CodebookOptions.from_dict(dict(options["codebook"]))
    cls = QUANTIZERS[config.quantizer["kind"]]
    try:
        return cls(dim=config.network.dimension, **options)
    except TypeError as error:
        raise ValueError(f"bad options for quantizer {config.quantizer['kind']!r}: "
                         f"{error}") from error
