"""Seeded image augmentation: how transfer-learning methods grow k support images into a training pool.

One module, used by every method that augments (and by the `support-augment` reference row),
so "augmented" means the same thing everywhere. Each augmented image is a random affine
warp of one support image (shift, rotation, scale, optional horizontal flip where the
dataset allows it) followed by brightness and contrast jitter, all drawn from the given
generator and applied as one batched `grid_sample`. The reference images are never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: float = 2.0  # pixels
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.05  # relative zoom in or out
    hflip: bool = True  # only where the dataset allows it (`FewShotTask.allows_hflip`)
    brightness: float = 0.1  # multiplicative, +-
    contrast: float = 0.1  # around each image's mean, +-


def augment(
    images: torch.Tensor,
    n: int,
    generator: torch.Generator,
    config: AugmentConfig = AugmentConfig(),
    allow_hflip: bool = False,
    keep_originals: bool = True,
) -> torch.Tensor:
    """Return `n` images made from `images` (k, C, H, W) in [0, 1].

    With `keep_originals`, the first k outputs are the unchanged inputs (when n >= k); every
    other output is an augmented copy of input `i % k`, so each support image is used equally.
    """
    k, _, height, width = images.shape
    source = torch.arange(n) % k
    out = images[source].clone()
    first = k if keep_originals and n >= k else 0
    m = n - first
    if m <= 0:
        return out

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(m, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(config.max_rotation))
    zoom = 1 + uniform(config.max_scale)
    # affine_grid works in normalised coordinates where the image spans [-1, 1].
    shift_x = uniform(config.max_shift) * 2 / width
    shift_y = uniform(config.max_shift) * 2 / height
    flip = torch.ones(m)
    if config.hflip and allow_hflip:
        flip = torch.where(torch.rand(m, generator=generator) < 0.5, -1.0, 1.0)
    brightness = 1 + uniform(config.brightness)
    contrast = 1 + uniform(config.contrast)

    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1)
    batch = images[source[first:]]
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    jittered = (warped - mean) * contrast.view(-1, 1, 1, 1) + mean
    out[first:] = (jittered * brightness.view(-1, 1, 1, 1)).clamp_(0, 1)
    return out
