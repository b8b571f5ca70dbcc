"""CADA-VQ-VAE trained without meta-learning: the slides' "standard training" beside their meta-training.

Everything as `cadavqvae` (`methods/cadavqvae.py`), including the episodes, the steps and the
30-images-per-class subset of the `paper` profile, except the base-class phase: one persistent Adam
on the weights themselves, no Reptile (`meta_learning=False`). Run beside `cadavqvae` at the same
profile, the pair is the slides' comparison of the two regimes (at `paper`, with 30 images per class).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods import register
from methods.cadavqvae import CADAVQVAE, CADAVQVAEConfig


@dataclass(frozen=True)
class PlainCADAVQVAEConfig(CADAVQVAEConfig):
    meta_learning: bool = False


@register
class PlainCADAVQVAE(CADAVQVAE):
    title = "CADA-VQ-VAE ablation: standard training on the base classes (no Reptile meta-learning)"
    Config = PlainCADAVQVAEConfig
