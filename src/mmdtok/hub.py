"""Model folders on disk and on the Hugging Face Hub: ``config.json`` + ``model.safetensors``.

Where a model comes from is decided by one documented rule, not guessed: an existing
local directory is used as is; anything else must be a Hub repository id
(``owner/name``), fetched through the standard Hugging Face cache. Offline mode
(``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) only reads that cache.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mmdtok.atomic import atomic_path, save_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)


class ModelNotFoundError(FileNotFoundError):
    """A model folder or Hub repository could not be found or fetched."""


def offline_mode(local_files_only: bool = False) -> bool:
    """True when only the local cache may be used (argument, or ``HF_HUB_OFFLINE``)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return local_files_only or flag.strip().lower() in {"1", "true", "yes", "on"}


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Names ending so are files, never Hub repositories (token files, audio, weights).
FILE_SUFFIXES = {".mmdtok", ".wav", ".flac", ".ogg", ".mp3", ".safetensors", ".json", ".pt"}


def is_hub_id(name: str | os.PathLike[str]) -> bool:
    """Whether :func:`resolve_model` takes ``name`` for a Hub repository id: not a local
    folder, of the form ``owner/name``, not a path (a file's suffix, or a folder of this
    machine as the "owner")."""
    text = os.fspath(name)
    local = Path(text).expanduser()
    return (not local.is_dir() and bool(REPO_ID.match(text)) and ".." not in text
            and local.suffix.lower() not in FILE_SUFFIXES and not local.parent.is_dir())


def resolve_model(name_or_dir: str | os.PathLike[str], revision: str | None = None, *,
                  cache_dir: str | os.PathLike[str] | None = None,
                  local_files_only: bool = False, endpoint: str | None = None) -> Path:
    """The local folder holding ``config.json`` and ``model.safetensors`` of a model.

    ``name_or_dir``: an existing directory, or a Hub repository id ``owner/name``
    downloaded at ``revision`` (branch, tag or commit; default ``main``) into the
    Hugging Face cache (``cache_dir``, ``HF_HUB_CACHE``). Raises ModelNotFoundError with
    what to do when the folder, the repository, the revision or a file is missing, or
    when the Hub cannot be reached and the files are not cached.
    """
    text = os.fspath(name_or_dir)
    local = Path(text).expanduser()
    if local.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} was given for the local folder {local}; "
                             "revisions only apply to Hub repositories")
        missing = [f for f in MODEL_FILES if not (local / f).is_file()]
        if missing:
            raise ModelNotFoundError(f"{local} is not a model folder: it lacks {missing}")
        return local
    if not REPO_ID.match(text) or ".." in text:
        raise ModelNotFoundError(f"no model folder at {local}, and {text!r} is not a Hub "
                                 "repository id of the form 'owner/name'")
    if not is_hub_id(text):
        raise ModelNotFoundError(f"no such file or model folder: {local}")
    try:
        return _download(text, revision, cache_dir, offline_mode(local_files_only), endpoint)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(f"{error} (there is no local folder {local} either)"
                                 ) from error.__cause__


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None,
              offline: bool, endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    paths = []
    for filename in MODEL_FILES:
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, revision=revision,
                                              cache_dir=cache_dir, local_files_only=offline,
                                              endpoint=endpoint)))
        except LocalEntryNotFoundError as error:
            hint = ("offline mode is on (HF_HUB_OFFLINE or local_files_only) and it is "
                    "not in the cache" if offline else
                    "the Hub could not be reached and it is not in the cache")
            raise ModelNotFoundError(f"cannot get {filename} of {where}: {hint}. Download it "
                                     "once with network access, or pass a local folder."
                                     ) from error
        except RevisionNotFoundError as error:
            raise ModelNotFoundError(f"{repo_id} has no revision {revision!r}") from error
        except RepositoryNotFoundError as error:
            raise ModelNotFoundError(f"no Hub repository {repo_id!r} (or it is private: log "
                                     "in with `hf auth login`)") from error
        except EntryNotFoundError as error:
            raise ModelNotFoundError(f"{where} has no {filename}: not a model repository "
                                     "mmdtok can load") from error
        except HFValidationError as error:
            raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub repository id") from error
    return paths[0].parent


def read_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / CONFIG_NAME).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON: {error}") from error
    if isinstance(data, dict):
        return data
    raise ValueError(f"{folder / CONFIG_NAME} must hold a JSON object")


def write_folder(folder: str | os.PathLike[str], config: dict[str, Any],
                 tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Write config.json and model.safetensors, each atomically."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / WEIGHTS_NAME,
                     {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                     metadata or {})
    with atomic_path(out / CONFIG_NAME) as temp:
        temp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def upload_folder(folder_writer: Any, repo_id: str, *, revision: str | None = None,
                  private: bool | None = None, commit_message: str = "Upload mmdtok codec",
                  token: str | None = None, endpoint: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload what ``folder_writer(tmp_dir)`` writes;
    returns the commit URL. Failures (network, authentication, permissions) raise
    RuntimeError naming the repository, with huggingface_hub's error as the cause."""
    from huggingface_hub import HfApi

    if offline_mode():
        raise RuntimeError("cannot push to the Hub in offline mode (HF_HUB_OFFLINE is set)")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder_writer(tmp)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(folder_path=tmp, repo_id=repo_id, revision=revision,
                                     commit_message=commit_message)
        except Exception as error:  # network, auth, permissions: report with the cause
            raise RuntimeError(f"pushing to {repo_id} failed: {error}") from error
    return str(info)
