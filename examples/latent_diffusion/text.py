"""Text prompts from the corpus manifest, and a small text encoder trained with the model.

No pretrained text model (CLAP, T5) can be downloaded here, so the example learns its own:
words of the prompts -> a vocabulary -> a small transformer -> token embeddings and a
mask. The diffusion model only sees ``(embeddings [B, N, W], mask [B, N])``: any module
with that output (a frozen CLAP or T5 encoder and a projection) can take its place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import torch
from torch import Tensor, nn

# General MIDI families (program // 8), as the rendered corpus names its instruments.
GM_FAMILIES = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings",
               "ensemble", "brass", "reed", "pipe", "synth lead", "synth pad",
               "synth effects", "ethnic", "percussive", "sound effects")
PAD, UNKNOWN = "<pad>", "<unk>"


def prompt_for(entry: dict) -> str:
    """A prompt from a manifest entry: the instruments (General MIDI families) and the
    drums of a rendered piece, the package of a recording, and the source piece's name."""
    words = []
    if entry.get("instruments"):
        families = dict.fromkeys(GM_FAMILIES[int(p) // 8] for p in entry["instruments"])
        words.append(", ".join(families))
    if "drums" in entry:
        words.append("with drums" if entry["drums"] else "no drums")
    if entry.get("package"):
        words.append(f"recorded music from {entry['package']}")
    source = str(entry.get("source", ""))
    if source:
        stem = PurePosixPath(source.split(":", 1)[-1]).stem
        words.append(re.sub(r"[_\-.]+", " ", stem))
    return ", ".join(w for w in words if w)


def words(prompt: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", prompt.lower())


class Vocabulary:
    """Words to ids: 0 is padding, 1 an unknown word."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [PAD, UNKNOWN, *[t for t in tokens if t not in (PAD, UNKNOWN)]]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_prompts(cls, prompts: Sequence[str], min_count: int = 1) -> Vocabulary:
        counts: dict[str, int] = {}
        for prompt in prompts:
            for word in words(prompt):
                counts[word] = counts.get(word, 0) + 1
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, prompts: Sequence[str], max_words: int) -> Tensor:
        """Ids [B, N] (N = the longest prompt, at most ``max_words``, at least 1), padded
        with 0; an empty prompt is all padding."""
        ids = [[self.index.get(w, 1) for w in words(p)][:max_words] for p in prompts]
        width = max(1, max((len(i) for i in ids), default=1))
        out = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, values in enumerate(ids):
            out[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        return out


class TextEncoder(nn.Module):
    """Word embeddings, learned positions and a small transformer encoder: ids [B, N] ->
    (embeddings [B, N, width], mask [B, N], True for real words)."""

    def __init__(self, vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4,
                 max_words: int = 32) -> None:
        super().__init__()
        self.max_words = max_words
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_words, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        ids = ids[:, : self.max_words]
        mask = ids != 0
        x = self.embed(ids) + self.position[: ids.shape[1]]
        # A prompt with no words attends to its padding (all masked would give NaN);
        # the diffusion model masks those tokens out anyway.
        attend = mask | ~mask.any(dim=1, keepdim=True)
        x = self.encoder(x, src_key_padding_mask=~attend)
        return self.norm(x), mask
