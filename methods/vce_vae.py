"""VCE trained with the plain VAE loss throughout: the ablation of VCE's Table 1 ("Our VCE, VAE", 68.75 nats).

Everything as `vce` (`methods/vce.py`), except that the third training phase continues with the
VAE loss L_CON + L_KL instead of switching to the LMVAE loss, for the same number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods import register
from methods.vce import VCE, VCEConfig


@dataclass(frozen=True)
class VCEVAEConfig(VCEConfig):
    loss: str = "vae"


@register
class VCEWithVAELoss(VCE):
    title = "VCE ablation: the plain VAE loss in every phase (no LMVAE)"
    Config = VCEVAEConfig
