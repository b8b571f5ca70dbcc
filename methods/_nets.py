"""Network pieces shared across method families: normalisation choice, the residual block, the vector quantiser."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

CODEBOOK_UPDATES = ("loss", "ema")
CODEBOOK_INITS = ("uniform", "normal")


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


def activation_layer(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation '{kind}' (valid: prelu, relu)")


class ResidualBlock(nn.Module):
    """Pre-activation residual block that optionally resamples by 2: skip(x) + body(x), body = norm,
    activation, 3x3 conv, norm, activation, conv of `second_kernel`; the skip path is a 1x1 conv
    when the channel count changes.

    The defaults (layer norm, PReLU, two 3x3 convs) are the block of FIGR's residual networks,
    also VCE's. `norm="none", activation="relu", second_kernel=1` is VQ-VAE's block
    x + conv1x1(ReLU(conv3x3(ReLU(x)))) (van den Oord et al. 2017, section 4.1).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        resample: str | None = None,
        norm: str = "layer",
        activation: str = "prelu",
        second_kernel: int = 3,
    ):
        super().__init__()
        self.resample = resample
        self.body = nn.Sequential(
            norm_2d(norm, c_in),
            activation_layer(activation, c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1),
            norm_2d(norm, c_out),
            activation_layer(activation, c_out),
            nn.Conv2d(c_out, c_out, second_kernel, 1, second_kernel // 2),
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


class Quantised(NamedTuple):
    z_q: torch.Tensor  # (..., D): the codes' values, with the straight-through gradient to the input
    codes: torch.Tensor  # (...) codebook indices
    codebook_loss: torch.Tensor  # batch mean of |sg(z_e) - e|^2 summed over each row (moves the codes); 0 with "ema"
    commitment_loss: torch.Tensor  # batch mean of |z_e - sg(e)|^2 summed over each row (moves the encoder)


class VectorQuantiser(nn.Module):
    """VQ-VAE's quantiser (van den Oord, Vinyals and Kavukcuoglu, Neural Discrete Representation
    Learning, NeurIPS 2017): each D-vector on the last dimension of z_e (..., D) is replaced by its
    nearest (Euclidean) row e of a (size, D) codebook, with the straight-through estimator (the
    forward value is e, the gradient reaches z_e unchanged). The losses sum over all but the first
    (batch) dimension and average over the batch.

    `init`: the codebook starts uniform in +-1/size (`uniform`, small codes as in common VQ-VAE
    implementations) or from N(0, I) (`normal`: codes spread like a standard-normal latent).

    `update="loss"`: the codebook is a parameter trained by the codebook loss ||sg[z_e] - e||^2.
    `update="ema"`: the codebook is a buffer; in train mode every forward pass moves each code to
    the moving average of the encoder outputs assigned to it: N_j <- d N_j + (1 - d) n_j,
    m_j <- d m_j + (1 - d) sum_{i -> j} z_e_i, e_j = m_j / N_j (the paper's appendix A.1). N starts
    at 1 and m at the initial code, so a code that is not assigned keeps its place (both decay
    alike). N is not Laplace-smoothed (Sonnet's variant): with smoothing, a code unused for a few
    thousand steps (decay^t below the smoothing constant) drifts to the origin.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        update: str = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        init: str = "uniform",
    ):
        super().__init__()
        if update not in CODEBOOK_UPDATES:
            raise ValueError(f"unknown codebook_update '{update}' (valid: {', '.join(CODEBOOK_UPDATES)})")
        if init not in CODEBOOK_INITS:
            raise ValueError(f"unknown codebook init '{init}' (valid: {', '.join(CODEBOOK_INITS)})")
        self.size, self.dim, self.update, self.decay, self.epsilon = size, dim, update, decay, epsilon
        initial = torch.empty(size, dim).uniform_(-1 / size, 1 / size) if init == "uniform" else torch.randn(size, dim)
        if update == "loss":
            self.codebook = nn.Parameter(initial)
        else:
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.ones(size))
            self.register_buffer("ema_sum", initial.clone())

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances of each vector of z (..., D) to each code: (..., size)."""
        codebook = self.codebook
        return z.pow(2).sum(-1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices (...) -> code vectors (..., D)."""
        return self.codebook[codes]

    def forward(self, z_e: torch.Tensor) -> Quantised:
        codes = self.distances(z_e).argmin(-1)
        quantised = self.lookup(codes)
        if self.training and self.update == "ema":
            self._ema_update(z_e.detach(), codes)  # this step's z_q uses the codebook before the update
        codebook_loss = (
            (quantised - z_e.detach()).pow(2).flatten(1).sum(1).mean() if self.update == "loss" else z_e.new_zeros(())
        )
        commitment_loss = (z_e - quantised.detach()).pow(2).flatten(1).sum(1).mean()
        # Straight-through estimator: the forward value is the code, the gradient goes to z_e unchanged.
        z_q = z_e + (quantised - z_e).detach()
        return Quantised(z_q, codes, codebook_loss, commitment_loss)

    @torch.no_grad()
    def _ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z_e.reshape(-1, self.dim)
        one_hot = F.one_hot(codes.reshape(-1), self.size).to(flat.dtype)
        self.ema_count.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(one_hot.T @ flat, alpha=1 - self.decay)
        # e_j = m_j / N_j; a code whose count has decayed below epsilon stays where it is (no 0 / 0).
        alive = self.ema_count > self.epsilon
        updated = self.ema_sum / self.ema_count.clamp_min(self.epsilon)[:, None]
        self.codebook.copy_(torch.where(alive[:, None], updated, self.codebook))
