"""Batched nearest-neighbour search by pixel MSE, and the shifted support set of the memorisation metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metrics import EvalInputs, MetricSettings, fixed_setting


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
    """Nearest reference image of every sample, computed once per evaluation (mse and ssim share it)."""
    return inputs.shared(_nearest_reference)


def _nearest_reference(inputs: EvalInputs) -> tuple[torch.Tensor, torch.Tensor]:
    return nearest_by_mse(inputs.samples, inputs.reference)


DEFAULT_SHIFT_PIXELS = 2  # the shared augmentation's largest shift


@dataclass(frozen=True)
class ShiftSettings(MetricSettings):
    """Read by support_nn_shift_mse and support_nn_feat (one shifted support set for both)."""

    shift_pixels: int = fixed_setting(
        DEFAULT_SHIFT_PIXELS,
        "largest shift s in pixels, each direction (the augmentation's largest); card: `max_shift_pixels`",
    )

    def __post_init__(self):
        value = self.shift_pixels
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"shift_pixels must be a whole number of pixels >= 0, got {value!r}")


def shifted_copies(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Every image translated by every (dy, dx) in [-max_shift, max_shift]^2, borders replicated."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = range(2 * max_shift + 1)
    return torch.cat([padded[..., dy : dy + height, dx : dx + width] for dy in offsets for dx in offsets])
