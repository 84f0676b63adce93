"""Losses: the MMD independence loss between codebooks, and its training helper."""

from mmdtok.losses.independence import (
    PAPER_BANDWIDTHS,
    PRESETS,
    IndependenceLoss,
    straight_through_streams,
)
from mmdtok.losses.macro_batch import MacroBatchIndependence

__all__ = ["PAPER_BANDWIDTHS", "PRESETS", "IndependenceLoss", "MacroBatchIndependence",
           "straight_through_streams"]
