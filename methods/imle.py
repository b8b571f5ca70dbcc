"""Vanilla IMLE (Li and Malik, Implicit Maximum Likelihood Estimation, 2018).

Every round, every training image takes the nearest sample of a freshly drawn pool as its target
latent code; the generator is then trained to pull those samples towards their images. Trained
from scratch on the support images only. Core loop and distances: `methods/_imle.py`.
"""

from __future__ import annotations

import torch

from methods import register
from methods._imle import IMLEMethod


@register
class IMLE(IMLEMethod):
    title = "IMLE: nearest pool sample per training image, pulled towards it (from scratch on the support set)"
    reference = "Li and Malik, Implicit Maximum Likelihood Estimation, 2018"
    version = "3"

    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return distances.argmin(1), torch.ones(distances.shape[0], dtype=torch.bool)
