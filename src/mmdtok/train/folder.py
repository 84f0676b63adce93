"""The layout of a training run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """The layout of a training run: the exported codec is a model folder at the root
    (``config.json`` + ``model.safetensors``, so the run folder itself is a ``--model``),
    next to the run's settings, its checkpoint, validation results and logs."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def settings(self) -> Path:
        return self.root / "train_config.json"

    @property
    def validation(self) -> Path:
        return self.root / "validation.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists()
