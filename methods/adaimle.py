"""Adaptive IMLE (Aghabozorgi, Peng and Li, Adaptive IMLE for Few-shot Pretraining-free Generative
Modelling, ICLR 2023).

Each training image i keeps a threshold tau_i (initially infinite). Each round one shared pool
is drawn; if its nearest sample to image i lies within tau_i, image i takes that sample's latent
code and tightens its threshold to `tightening` (0.98) times that distance; otherwise it keeps its
previous code and goes on being pulled towards it. Each image thus moves to a closer neighbourhood
at its own pace, a per-example curriculum, instead of all images being re-matched every round.
Core loop and distances: `methods/_imle.py`.
"""

from __future__ import annotations

import torch

from methods import register
from methods._imle import IMLEMethod


@register
class AdaptiveIMLE(IMLEMethod):
    title = "Adaptive IMLE: per-example thresholds that tighten once reached (from scratch on the support set)"
    reference = "Aghabozorgi, Peng and Li, Adaptive IMLE for Few-shot Pretraining-free Generative Modelling, ICLR 2023"
    version = "1"

    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if current is None:  # first round: thresholds start infinite, every example takes its nearest sample
            self.thresholds = torch.full((distances.shape[0],), float("inf"))
        best, index = distances.min(1)
        take = best < self.thresholds
        self.thresholds[take] = self.config.tightening * best[take]
        return index, take

    def selection_log(self) -> dict:
        finite = self.thresholds[torch.isfinite(self.thresholds)]
        return {"final_threshold_mean": float(finite.mean()) if len(finite) else None}
