"""Save and load codecs as model folders (ours, or EnCodec's transformers layout)."""

from __future__ import annotations

import os
from pathlib import Path

from mmdtok import __version__
from mmdtok.convert import codec_config_from_encodec, convert_encodec_state, is_encodec_config
from mmdtok.hub import (
    WEIGHTS_NAME,
    read_config,
    resolve_model,
    upload_folder,
    write_folder,
)
from mmdtok.models.codec import Codec, CodecConfig, load_codec_state

FORMAT = "mmdtok-codec"
FORMAT_VERSION = 1

# Codecs shipped inside the package, by name; their origin reads "mmdtok:<name>".
BUNDLED_DIR = Path(__file__).parents[1] / "weights"
BUNDLED_PREFIX = "mmdtok:"
DEFAULT_CODEC = "small-music"


def save_pretrained(codec: Codec, folder: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` (format, version, codec config) and ``model.safetensors``."""
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "mmdtok_version": __version__, "codec": codec.config.to_dict()}
    return write_folder(folder, config, codec.state_dict(),
                        metadata={"format": FORMAT, "fingerprint": codec.fingerprint()})


def load_pretrained(name_or_dir: str | os.PathLike[str], revision: str | None = None, *,
                    cache_dir: str | os.PathLike[str] | None = None,
                    local_files_only: bool = False, inference: bool = True,
                    endpoint: str | None = None) -> Codec:
    """A codec from a local folder or a Hub repository, in mmdtok's format or EnCodec's
    (converted on load). ``inference``: eval mode with weight norm folded."""
    from safetensors.torch import load_file

    folder = resolve_model(name_or_dir, revision, cache_dir=cache_dir,
                           local_files_only=local_files_only, endpoint=endpoint)
    data = read_config(folder)
    state = load_file(str(folder / WEIGHTS_NAME))
    if is_encodec_config(data):
        config = codec_config_from_encodec(data, name=_default_name(name_or_dir))
        state = convert_encodec_state(state)
    elif data.get("format") == FORMAT:
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{folder} holds codec format version {version}; this mmdtok "
                             f"({__version__}) reads up to {FORMAT_VERSION}: upgrade mmdtok")
        config = CodecConfig.from_dict(data["codec"])
    else:
        raise ValueError(f"{folder / 'config.json'} is neither an mmdtok codec (format "
                         f"{FORMAT!r}) nor an EnCodec model (model_type 'encodec')")
    codec = load_codec_state(Codec.from_config(config), state)
    codec.origin = _origin(name_or_dir, folder, revision)
    return codec.for_inference() if inference else codec


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


def load_codec(name: str | os.PathLike[str] | None = None, revision: str | None = None
               ) -> Codec:
    """A codec by the one naming rule of mmdtok: ``mmdtok:NAME`` is a codec shipped in the
    package, anything else a model folder or a Hub repository id (a Hub id never
    contains a colon, so the forms cannot be confused); ``None`` (or "") is the default
    codec. ValueError for a revision of a shipped codec."""
    text = str(name) if name else f"{BUNDLED_PREFIX}{DEFAULT_CODEC}"
    if text.startswith(BUNDLED_PREFIX):
        if revision is not None:
            raise ValueError(f"--revision applies to Hub repositories, not to {text}")
        return load_bundled(text.removeprefix(BUNDLED_PREFIX))
    return load_pretrained(name, revision)


def bundled_model_card(name: str = DEFAULT_CODEC) -> str:
    """The model card (Markdown) of a bundled codec: data, training, measured quality."""
    path = BUNDLED_DIR / name / "MODEL_CARD.md"
    if not path.is_file():
        raise ValueError(f"no model card for {name!r}; bundled: {bundled_names() or 'none'}")
    return path.read_text()


def push_to_hub(codec: Codec, repo_id: str, *, revision: str | None = None,
                private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload mmdtok codec", endpoint: str | None = None) -> str:
    """Upload the codec's model folder to ``repo_id`` (created if needed)."""
    return upload_folder(lambda tmp: save_pretrained(codec, tmp), repo_id, revision=revision,
                         private=private, token=token, commit_message=commit_message,
                         endpoint=endpoint)


def _default_name(name_or_dir: str | os.PathLike[str]) -> str:
    return Path(os.fspath(name_or_dir)).name or "encodec"


def _origin(name_or_dir: str | os.PathLike[str], folder: Path, revision: str | None) -> str:
    text = os.fspath(name_or_dir)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser().resolve())
    # Hub snapshots live in snapshots/<commit>/: record the exact commit.
    return f"{text}@{folder.name if folder.parent.name == 'snapshots' else revision or 'main'}"
