"""Persistence: where codecs, token files and training runs live, in one place above the
models.

- The naming rule of every command: ``mmdtok:NAME`` is a codec shipped inside the package,
  anything else a model folder or a Hub repository id (a Hub id never contains a colon,
  so the forms cannot be confused); no name is the default codec.
- Model folders (``config.json`` + ``model.safetensors``, mmdtok's format or EnCodec's),
  saved, loaded (with the migration of older format versions) and pushed to the Hub.
- :class:`Codec`: the architecture (:class:`~mmdtok.models.CodecModel`) with the Hugging
  Face convention on top, ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``.
- The origin string: where a codec came from, written into each token file (by
  :func:`mmdtok.tokens.token_file`) and parsed back so that ``decode`` finds the codec
  again.

The layout of a training run folder is the trainer's (``mmdtok.train.folder``).

Nothing under ``mmdtok.models`` or ``mmdtok.quantizers`` imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmdtok.convert import (
    codec_config_from_dac,
    codec_config_from_encodec,
    convert_dac_state,
    convert_encodec_state,
    is_dac_config,
    is_encodec_config,
)
from mmdtok.hub import WEIGHTS_NAME, read_config, resolve_model, upload_folder, write_folder
from mmdtok.models import CodecConfig, CodecModel
from mmdtok.version import __version__

FORMAT = "mmdtok-codec"
FORMAT_VERSION = 2  # 2: codebook options nested, codebook_dropout, latent_norm

# Codecs shipped inside the package, by name; their origin reads "mmdtok:<name>".
BUNDLED_DIR = Path(__file__).parent / "weights"
BUNDLED_PREFIX = "mmdtok:"
DEFAULT_CODEC = "small-music"


class Codec(CodecModel):
    """A codec (encoder + quantizer + decoder, see :class:`~mmdtok.models.CodecModel`)
    that loads from and saves to model folders and the Hugging Face Hub."""

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], revision: str | None = None,
                        **options: Any) -> Codec:
        """Load a codec from a local folder, a Hugging Face Hub repository id (mmdtok's
        format, EnCodec's or DAC's transformers layout, converted on load) or a shipped
        codec's name (``mmdtok:small-music``, as the command line takes it). Options:
        ``cache_dir``, ``local_files_only``, ``endpoint``, ``inference`` (default True:
        eval mode with weight norm folded); see :func:`load_pretrained`."""
        if str(name_or_dir).startswith(BUNDLED_PREFIX):
            if revision is not None:
                raise ValueError(f"a revision applies to Hub repositories, not to the "
                                 f"shipped codec {name_or_dir}")
            inference = options.pop("inference", True)
            if options:
                raise TypeError(f"{', '.join(sorted(options))}: options of Hub and folder "
                                f"loads, not of the shipped codec {name_or_dir}")
            return load_bundled(str(name_or_dir).removeprefix(BUNDLED_PREFIX),
                                inference=inference)
        return load_pretrained(name_or_dir, revision, **options)

    @classmethod
    def bundled(cls, name: str = DEFAULT_CODEC, **options: Any) -> Codec:
        """A codec shipped inside the package, loaded without any download (``small-music``
        is the default codec of ``mmdtok encode``); see :func:`load_bundled`."""
        return load_bundled(name, **options)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to ``folder``."""
        return save_pretrained(self, folder)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload the model folder to the Hub (``revision``, ``private``, ``token``,
        ``commit_message``, ``endpoint``); returns the commit URL."""
        return push_to_hub(self, repo_id, **options)


def save_pretrained(codec: CodecModel, folder: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` (format, version, codec config) and ``model.safetensors``.
    ValueError (and nothing written) when a weight or buffer holds NaN or infinity: such
    a codec would encode everything to one code."""
    state = codec.state_dict()
    broken = [name for name, value in state.items()
              if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise ValueError(f"refusing to save a codec with non-finite values in "
                         f"{', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "mmdtok_version": __version__, "codec": codec.config.to_dict()}
    return write_folder(folder, config, state,
                        metadata={"format": FORMAT, "fingerprint": codec.fingerprint()})


def load_pretrained(name_or_dir: str | os.PathLike[str], revision: str | None = None, *,
                    cache_dir: str | os.PathLike[str] | None = None,
                    local_files_only: bool = False, inference: bool = True,
                    endpoint: str | None = None) -> Codec:
    """A codec from a local folder or a Hub repository, in mmdtok's format, EnCodec's or
    DAC's (converted on load). ``inference``: eval mode with weight norm folded."""
    folder = resolve_model(name_or_dir, revision, cache_dir=cache_dir,
                           local_files_only=local_files_only, endpoint=endpoint)
    data = read_config(folder)
    state = read_weights(folder / WEIGHTS_NAME)
    try:
        if is_encodec_config(data):
            config = codec_config_from_encodec(data, name=_default_name(name_or_dir))
            state = convert_encodec_state(state)
        elif is_dac_config(data):
            config = codec_config_from_dac(data, name=_default_name(name_or_dir))
            state = convert_dac_state(state)
        elif data.get("format") == FORMAT:
            config, state = _read_format(data, state, folder)
        else:
            raise ValueError(f"{folder / 'config.json'} is neither an mmdtok codec (format "
                             f"{FORMAT!r}) nor an EnCodec or DAC model (model_type 'encodec' or "
                             f"'dac')")
        codec = Codec.from_config(config).load_weights(state)
    except ValueError as error:  # name the model in every message
        if str(folder) in str(error):
            raise
        raise ValueError(f"the model in {folder}: {error}") from error
    codec.origin = _origin(name_or_dir, folder, revision)
    return codec.for_inference() if inference else codec


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; ValueError naming the file when it is missing,
    empty, truncated or not safetensors (a pickle is never unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}): the "
                         "download or copy is incomplete, or it is another format") from error


def _read_format(data: dict[str, Any], state: dict[str, Tensor], folder: Path
                 ) -> tuple[CodecConfig, dict[str, Tensor]]:
    version = data.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{folder} holds codec format version {version}; this mmdtok "
                         f"({__version__}) reads 1 to {FORMAT_VERSION}: upgrade mmdtok")
    if not isinstance(data.get("codec"), dict):
        raise ValueError(f"{folder / 'config.json'} lacks its 'codec' object (the codec's "
                         "settings): it is not a complete mmdtok model folder")
    codec = dict(data["codec"])
    if version == 1:
        codec, state = migrate_format_1(codec, state)
    return CodecConfig.from_dict(codec), state


# Format 1 spelled the codebook options flat among the quantizer's keywords and named
# codebook dropout and the latent norm otherwise.
_FLAT_CODEBOOK_KEYS = ("decay", "kmeans_iters", "dead_code_threshold", "dead_code_unit", "seed")
_RENAMED_KEYS = {"quantizer_dropout": "codebook_dropout",
                 "hierarchical_dropout": "codebook_dropout", "standardize": "latent_norm"}


def migrate_format_1(codec: dict[str, Any], state: dict[str, Tensor]
                     ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A format-1 codec config and state dict in today's names (same weights)."""
    quantizer = {_RENAMED_KEYS.get(k, k): v for k, v in codec.get("quantizer", {}).items()}
    codebook = {k: quantizer.pop(k) for k in _FLAT_CODEBOOK_KEYS if k in quantizer}
    if codebook:
        quantizer["codebook"] = codebook
    state = {name.replace("quantizer.standardizer.", "quantizer.latent_norm."): tensor
             for name, tensor in state.items()}
    return {**codec, "quantizer": quantizer}, state


def bundled_names() -> list[str]:
    """Names of the codecs shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def load_bundled(name: str = DEFAULT_CODEC, *, inference: bool = True) -> Codec:
    """A codec shipped inside the package (no download): ``small-music`` is the default
    codec of ``mmdtok encode``. Its model card is ``bundled_model_card(name)``."""
    if name not in bundled_names():
        raise ValueError(f"no codec named {name!r} ships with mmdtok {__version__}; "
                         f"bundled: {bundled_names() or 'none'}")
    codec = load_pretrained(BUNDLED_DIR / name, inference=inference)
    codec.origin = f"{BUNDLED_PREFIX}{name}"
    return codec


def bundled_codes_fingerprints() -> dict[str, str]:
    """{weights fingerprint: codes fingerprint} of every codec shipped in the package
    (computed once per process, a fraction of a second a codec): how a token file written
    before files recorded their codes fingerprint says what its codes mean."""
    if not _SHIPPED:
        for name in bundled_names():
            codec = load_bundled(name)
            _SHIPPED[codec.fingerprint()] = codec.codes_fingerprint()
    return _SHIPPED


_SHIPPED: dict[str, str] = {}


def bundled_model_card(name: str = DEFAULT_CODEC) -> str:
    """The model card (Markdown) of a bundled codec: data, training, measured quality."""
    path = BUNDLED_DIR / name / "MODEL_CARD.md"
    if not path.is_file():
        raise ValueError(f"no model card for {name!r}; bundled: {bundled_names() or 'none'}")
    return path.read_text()


def is_bundled_name(name: str | os.PathLike[str] | None) -> bool:
    """True when ``name`` names a shipped codec (``mmdtok:NAME``) or is empty (the
    default codec): names that take no revision."""
    return not name or str(name).startswith(BUNDLED_PREFIX)


def load_codec(name: str | os.PathLike[str] | None = None, revision: str | None = None
               ) -> Codec:
    """A codec by the naming rule: ``mmdtok:NAME`` is a codec shipped in the package,
    anything else a model folder or a Hub repository id; ``None`` (or "") is the default
    codec. ValueError for a ``revision`` of a shipped codec."""
    if is_bundled_name(name):
        text = str(name) if name else f"{BUNDLED_PREFIX}{DEFAULT_CODEC}"
        if revision is not None:
            raise ValueError(f"a revision applies to Hub repositories, not to the shipped "
                             f"codec {text}")
        return load_bundled(text.removeprefix(BUNDLED_PREFIX))
    return load_pretrained(name, revision)


def push_to_hub(codec: CodecModel, repo_id: str, *, revision: str | None = None,
                private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload mmdtok codec", endpoint: str | None = None) -> str:
    """Upload the codec's model folder to ``repo_id`` (created if needed)."""
    return upload_folder(lambda tmp: save_pretrained(codec, tmp), repo_id, revision=revision,
                         private=private, token=token, commit_message=commit_message,
                         endpoint=endpoint)


def _default_name(name_or_dir: str | os.PathLike[str]) -> str:
    return Path(os.fspath(name_or_dir)).name or "encodec"


def _origin(name_or_dir: str | os.PathLike[str], folder: Path, revision: str | None) -> str:
    """A folder's absolute path, or ``repo@commit`` for the Hub (the exact commit of a
    cached snapshot, else the revision asked for)."""
    text = os.fspath(name_or_dir)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser().resolve())
    # Hub snapshots live in snapshots/<commit>/: record the exact commit.
    return f"{text}@{folder.name if folder.parent.name == 'snapshots' else revision or 'main'}"


def parse_origin(origin: str) -> tuple[str | None, str | None]:
    """The (name, revision) that loads the codec an origin string describes again, by
    the naming rule: ``mmdtok:NAME`` and folders as they are, ``repo@commit`` split;
    (None, None) for an empty origin."""
    if not origin:
        return None, None
    if origin.startswith(BUNDLED_PREFIX) or Path(origin).is_dir():
        return origin, None
    name, _, revision = origin.partition("@")
    return name, revision or None
