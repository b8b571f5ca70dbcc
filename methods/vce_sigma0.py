"""VCE with the LMVAE loss and no style regulariser (sigma = 0): the ablation of VCE's Table 1 (62.8 nats).

Everything as `vce` (`methods/vce.py`), except sigma, the weight of L_REG(q, y) (the converted
image scored against the condition image) in the LMVAE loss: 0, so the data term is L_CON(x, y)
alone. The paper reports this variant's NLL as the lowest of its table (62.8 against 81.39 at
sigma = 0.15) and keeps sigma = 0.15 for the diversity of its samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods import register
from methods.vce import VCE, VCEConfig


@dataclass(frozen=True)
class VCESigma0Config(VCEConfig):
    style_weight: float = 0.0


@register
class VCEWithoutStyleTerm(VCE):
    title = "VCE ablation: the LMVAE loss without the style regulariser (sigma = 0)"
    Config = VCESigma0Config
