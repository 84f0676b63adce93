"""Losses: the MMD independence loss between codebooks, and its training helper."""

from mmdtok.losses.independence import (
    PAPER_BANDWIDTHS,
    PRESETS,
    IndependenceLoss,
    straight_through_streams,
)

__all__ = ["PAPER_BANDWIDTHS", "PRESETS", "IndependenceLoss", "straight_through_streams"]
