"""Losses: the MMD independence loss between codebooks and its macro-batch helper; the
spectral, adversarial and balancing losses of codec training live in their modules
(``spectral``, ``adversarial``, ``balancer``). Every loss returns a value: the caller
weights it and calls ``backward``."""

from mmdtok.losses.independence import (
    PAPER_BANDWIDTHS,
    PRESETS,
    IndependenceLoss,
    straight_through_streams,
)
from mmdtok.losses.macro_batch import MacroBatchIndependence

__all__ = ["PAPER_BANDWIDTHS", "PRESETS", "IndependenceLoss", "MacroBatchIndependence",
           "straight_through_streams"]
