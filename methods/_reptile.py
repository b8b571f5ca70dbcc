"""Reptile (Nichol, Achiam and Schulman, On First-Order Meta-Learning Algorithms, 2018): the outer update.

After K inner steps on a copy W of the meta-parameters Phi for one task, Reptile moves Phi
towards W. Written as an optimiser step, as FIGR does: set the gradient of Phi to (Phi - W) and
take one step of the meta-optimiser (Adam in FIGR). Batch-norm statistics would be averaged
across tasks by this update, so networks meta-trained with it use layer normalisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def reptile_step(meta: nn.Module, adapted: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """One outer update of `meta` towards `adapted`; returns the distance ||Phi - W|| before it."""
    squared = 0.0
    for phi, w in zip(meta.parameters(), adapted.parameters(), strict=True):
        difference = phi - w
        phi.grad = difference.clone()
        squared += float(difference.pow(2).sum())
    optimizer.step()
    return squared ** 0.5


@torch.no_grad()
def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Overwrite `target`'s parameters and buffers with `source`'s (the inner loop's fresh copy W of Phi)."""
    target.load_state_dict(source.state_dict())
