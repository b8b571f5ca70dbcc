"""Adaptive IMLE (Aghabozorgi, Peng and Li, Adaptive IMLE for Few-shot Pretraining-free Generative
Modelling, ICML 2023).

Vanilla IMLE re-matches every training image every round, whatever progress its sample made.
Adaptive IMLE gives each image i its own pace. In the first round every image takes the nearest
sample of the shared pool and gets the threshold tau_i = `tightening` (0.98) x that distance.
Afterwards, at the start of each round, the distance of image i's current sample G(z_i) is
measured; image i re-selects (the nearest sample of that round's shared pool) only when

- its current sample has come within tau_i and it kept its code for at least `staleness` rounds, or
- it kept its code for `force_resample` rounds (so no image is stuck);

on re-selection tau_i tightens to 0.98 x the distance its sample had reached. An image is thus
pulled towards one code until it is 2% closer than when that code was chosen: a per-example
curriculum. Core loop and distances: `methods/_imle.py`.
"""

from __future__ import annotations

import torch

from methods import register
from methods._imle import IMLEMethod


@register
class AdaptiveIMLE(IMLEMethod):
    title = "Adaptive IMLE: per-example thresholds that tighten once reached (from scratch on the support set)"
    reference = "Aghabozorgi, Peng and Li, Adaptive IMLE for Few-shot Pretraining-free Generative Modelling, ICML 2023"
    version = "3"

    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        n = distances.shape[0]
        best, index = distances.min(1)
        if current is None:  # first round: every example takes its nearest sample
            self.rounds_kept = torch.zeros(n, dtype=torch.int64)
            self.thresholds = cfg.tightening * best
            return index, torch.ones(n, dtype=torch.bool)
        self.rounds_kept += 1
        reached = (current < self.thresholds) & (self.rounds_kept >= cfg.staleness)
        take = reached | (self.rounds_kept >= cfg.force_resample)
        self.thresholds[take] = cfg.tightening * current[take]
        self.rounds_kept[take] = 0
        self.reached = getattr(self, "reached", 0) + int(reached.sum())
        return index, take

    def selection_log(self) -> dict:
        return {
            "final_threshold_mean": float(self.thresholds.mean()),
            "reselections_by_threshold": getattr(self, "reached", 0),
        }
