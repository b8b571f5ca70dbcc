"""Network pieces shared across method families (GANs, FIGR, VCE): normalisation choice and the residual block."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm_2d(kind: str, channels: int) -> nn.Module:
    """`batch` (DCGAN), `layer` (normalises each sample over channels and pixels: what WGAN-GP's
    per-sample gradient penalty and Reptile's weight averaging need) or `none`."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation '{kind}' (valid: batch, layer, none)")


class ResidualBlock(nn.Module):
    """Pre-activation residual block (layer norm, PReLU, 3x3 convs) that optionally resamples by 2."""

    def __init__(self, c_in: int, c_out: int, resample: str | None = None, norm: str = "layer"):
        super().__init__()
        self.resample = resample
        self.body = nn.Sequential(
            norm_2d(norm, c_in), nn.PReLU(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1),
            norm_2d(norm, c_out), nn.PReLU(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._resample(x)
        return self.skip(x) + self.body(x)
