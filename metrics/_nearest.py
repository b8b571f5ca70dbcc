"""Batched nearest-neighbour search by pixel mean squared error (shared by mse, ssim, support_nn_mse)."""

from __future__ import annotations

import torch

from metrics import EvalInputs


def nearest_by_mse(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the index of its nearest key image by pixel MSE, and that MSE.

    Squared distances come from ||q||^2 + ||k||^2 - 2 q.k in float64 (exact enough for [0,1]
    images), computed in chunks of queries so memory stays at chunk x len(keys).
    """
    q = queries.flatten(1).double()
    k = keys.flatten(1).double()
    k_norms = k.pow(2).sum(1)
    indices, distances = [], []
    for start in range(0, q.shape[0], chunk):
        block = q[start : start + chunk]
        squared = block.pow(2).sum(1, keepdim=True) + k_norms - 2 * block @ k.T
        best, index = squared.clamp_min(0).min(dim=1)
        indices.append(index)
        distances.append(best / q.shape[1])
    return torch.cat(indices), torch.cat(distances)


def nearest_reference(inputs: EvalInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference image of every sample, computed once per evaluation."""
    if "nearest_reference" not in inputs.cache:
        inputs.cache["nearest_reference"] = nearest_by_mse(inputs.samples, inputs.reference)
    return inputs.cache["nearest_reference"]
