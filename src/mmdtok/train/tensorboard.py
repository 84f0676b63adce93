"""TensorBoard logs of a training run (optional: ``pip install tensorboard``).

Scalars go under ``train/`` (losses, codebook perplexities, learning rate) and ``valid/``
(quality on the validation split); audio under ``audio/`` (a validation clip and its
reconstruction).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


class TrainLog:
    """A TensorBoard event writer in ``folder``; every call is a no-op when ``enabled``
    is False (other ranks than 0, or logs not asked for)."""

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch imports tensorboard lazily
            raise ValueError("tensorboard=true needs the tensorboard package: pip install "
                             "tensorboard (or mmdtok[train]); or set tensorboard=false"
                             ) from error
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{group}/{name}", value, step)

    def audio(self, name: str, audio: Tensor, sample_rate: int, step: int) -> None:
        """``audio`` [C, L]: the first channel is logged."""
        if self.writer is not None:
            self.writer.add_audio(f"audio/{name}", audio[0].clamp(-1, 1), step,
                                  sample_rate=sample_rate)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
