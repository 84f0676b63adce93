"""EnCodec's adversarial losses on a discriminator's outputs: hinge losses on the logits
and relative feature matching on the feature maps, each a mean over scales.

They take the per-scale lists of any multi-scale discriminator
(:class:`~mmdtok.models.discriminator.MultiScaleSTFTDiscriminator` gives them as
``.logits`` and ``.features``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def hinge_discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """mean over scales of E[relu(1 - D(real))] + E[relu(1 + D(fake))], from the
    logits of each scale."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: Sequence[Tensor]) -> Tensor:
    """mean over scales of E[relu(1 - D(fake))] (EnCodec's adversarial loss)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]
                          ) -> Tensor:
    """Mean over scales and layers of |f_real - f_fake|_1 / mean |f_real| (EnCodec's
    relative feature matching), from the feature maps of each scale; the real features
    carry no gradient."""
    terms = []
    for real_maps, fake_maps in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            r = r.detach()
            terms.append(F.l1_loss(f, r) / (r.abs().mean() + 1e-8))
    return torch.stack(terms).mean()
