"""The factorization gap of a tokenizer: what an LM loses by predicting the K codes of a
step independently.

    python -m examples.musicgen_lm.gap tokens/train --valid tokens/valid --pattern delay \\
        --frames 150 --steps 2000 -o runs/gap-delay

Trains the same temporal transformer twice, from the same initialization on the same
batches: once with K factorized heads (the fast model of MusicGen's delay and parallel
patterns) and once with the depth head (exact: code k of a step is predicted from the
past and codes 0..k-1 of the step). On the held-out windows,

    gap = NLL(factorized) - NLL(joint)   (nats per frame, summed over the K codes)

estimates the conditional total correlation of the K codes of a step given the past,
which is exactly what the factorization throws away: >= 0 in the limit of perfect
training, 0 when the codes of a step are independent given the past. Unlike plug-in
histograms of codes it stays meaningful with 1,024-entry codebooks, and it depends on the
layout (delay or parallel) as the LM that uses the codes does. ``gap_ci95`` is a paired
bootstrap interval over held-out windows; it holds the sampling noise of the test split,
not the spread over training seeds (rerun with ``--seed`` for that).

Writes OUT/gap.json atomically: pattern, nll_factorized, nll_joint, gap, gap_ci95,
frames (held-out frames scored), windows, steps, the LM's shape and training, and the
gap of every held-out window (``window_gaps``, for paired comparisons of codecs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import torch
from torch import Tensor

from examples.musicgen_lm.data import TokenSet, load_token_set, windows
from examples.musicgen_lm.model import LMConfig, nll_per_window
from examples.musicgen_lm.train import (
    LMTraining,
    add_arguments,
    lm_config,
    lm_training,
    load_valid,
    train_lm,
)
from mmdtok.atomic import atomic_path

RESAMPLES = 2000


def bootstrap_interval(values: Tensor, resamples: int = RESAMPLES, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` [W] (one per window)."""
    if values.ndim != 1 or values.numel() < 2:
        raise ValueError(f"need at least 2 values in a 1-D tensor, got {tuple(values.shape)}")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(values.numel(), (resamples, values.numel()), generator=generator)
    means = values.double()[picks].mean(dim=1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


def paired_difference(gaps: list[float], reference: list[float]) -> dict:
    """Mean of ``gaps - reference`` over the same held-out windows (two codecs' tokens of
    the same audio) with its paired bootstrap interval."""
    if len(gaps) != len(reference):
        raise ValueError(f"{len(gaps)} and {len(reference)} windows: not the same audio")
    difference = torch.tensor(gaps, dtype=torch.float64) - torch.tensor(
        reference, dtype=torch.float64)
    return {"difference": float(difference.mean()),
            "ci95": list(bootstrap_interval(difference))}


def factorization_gap(config: LMConfig, training: LMTraining, tokens: TokenSet,
                      held_out: TokenSet, progress: bool = True) -> dict:
    """Train the factorized and the depth-head LM of ``config`` (its ``head`` is ignored)
    and score both on the held-out windows; the facts of gap.json."""
    if config.pattern == "flatten":
        raise ValueError('the gap is measured under "delay" or "parallel"; "flatten" has '
                         "no factorized counterpart")
    test = windows(held_out, config.frames)
    if test.shape[0] < 2:
        raise ValueError(f"the held-out tokens hold {test.shape[0]} window of "
                         f"{config.frames} frames; the interval needs at least 2")
    nll, seconds = {}, {}
    for head in ("factorized", "depth"):
        started = time.perf_counter()
        model, _ = train_lm(replace(config, head=head), training, tokens, progress)
        seconds[head] = round(time.perf_counter() - started, 1)
        nll[head] = nll_per_window(model, test)
    difference = nll["factorized"] - nll["depth"]
    return {"pattern": config.pattern,
            "nll_factorized": float(nll["factorized"].mean()),
            "nll_joint": float(nll["depth"].mean()),
            "gap": float(difference.mean()),
            "gap_ci95": list(bootstrap_interval(difference)),
            "frames": test.shape[0] * test.shape[-1], "windows": test.shape[0],
            # Per held-out window, in file order: paired comparisons of two codecs' gaps
            # on the same audio (``paired_difference``).
            "window_gaps": [round(v, 6) for v in difference.tolist()],
            "steps": training.steps,
            "lm": {k: v for k, v in config.to_dict().items() if k != "head"},
            "training": asdict(training), "train_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Writes OUT/gap.json; see the module docstring for what the gap means.")
    add_arguments(parser, patterns=("delay", "parallel"))
    args = parser.parse_args(argv)
    try:
        if not args.valid:
            raise ValueError("--valid is required: the gap is measured on held-out tokens")
        tokens = load_token_set(args.tokens)
        held_out = load_valid(args.valid, tokens)
        config = lm_config(args, tokens, "factorized")
        training = lm_training(args)
        facts = factorization_gap(config, training, tokens, held_out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    facts |= {"codec_fingerprint": tokens.codec_fingerprint,
              "codec_origin": tokens.codec_origin}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "gap.json") as temp:
        temp.write_text(json.dumps(facts, indent=2) + "\n")
    low, high = facts["gap_ci95"]
    print(f"{facts['pattern']}: NLL factorized {facts['nll_factorized']:.4f}, joint "
          f"{facts['nll_joint']:.4f}, gap {facts['gap']:.4f} [{low:.4f}, {high:.4f}] nats "
          f"per frame over {facts['frames']} held-out frames")
    print(f"wrote {args.out / 'gap.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
