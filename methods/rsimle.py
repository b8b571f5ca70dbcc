"""Rejection-Sampling IMLE (Vashist, Peng and Li, Rejection Sampling IMLE: Designing Priors for Better
Few-Shot Image Synthesis, ECCV 2024).

IMLE's selected latent codes concentrate in tight bands around each training image, so the codes
seen in training do not follow the N(0, I) prior that test-time samples come from. RS-IMLE
changes the training prior: every pool sample within epsilon (`rejection_radius`) of ANY training
image is rejected before the nearest-neighbour selection, so each example's selected sample is
always some distance away and its loss stays informative. Otherwise as vanilla IMLE (every
example re-selects every round). Core loop and distances: `methods/_imle.py`.
"""

from __future__ import annotations

import torch

from methods import register
from methods._imle import IMLEMethod


@register
class RejectionSamplingIMLE(IMLEMethod):
    title = (
        "RS-IMLE: reject pool samples within epsilon of any training image, then IMLE (from scratch on the support set)"
    )
    reference = "Vashist, Peng and Li, Rejection Sampling IMLE, ECCV 2024"
    version = "1"

    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if current is None:  # first round of a fit
            self.rejections: list[float] = []
        rejected = (distances < self.config.rejection_radius).any(0)  # (m,): too close to some training image
        self.rejections.append(float(rejected.float().mean()))
        if rejected.all():  # nothing left to select from: keep every example's code this round
            return distances.argmin(1), torch.zeros(distances.shape[0], dtype=torch.bool)
        allowed = distances.masked_fill(rejected.unsqueeze(0), float("inf"))
        return allowed.argmin(1), torch.ones(distances.shape[0], dtype=torch.bool)

    def selection_log(self) -> dict:
        rejections = getattr(self, "rejections", [])
        return {
            "mean_rejected_fraction": sum(rejections) / len(rejections) if rejections else None,
            "final_rejected_fraction": rejections[-1] if rejections else None,
        }
