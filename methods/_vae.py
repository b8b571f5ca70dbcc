"""What every VAE-family method shares: the Gaussian posterior, its KL, the observation models.

Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014. Used by `vae`, `vqvae`,
`cadavqvae` and `vce`; the importance-weighted likelihood estimator is `bench.sdk.likelihood`.

Observation models (`observation_for`, chosen by the image's channel count; the decoder's output
is C maps of logits and the sample image is their sigmoid in both):

- grey-scale (C = 1): Bernoulli(sigmoid(logits)). Training uses the Bernoulli cross-entropy on
  the continuous [0, 1] values (standard practice; not a normalised density for non-binary x);
  likelihoods are evaluated on binarised images (`bench.sdk.likelihood.binarise`), the
  observation the `nll` metric scores for every grey method.
- colour (C > 1): a discretised logistic on the 256 levels of each 8-bit subpixel (Salimans,
  Karpathy, Chen and Kingma, PixelCNN++, ICLR 2017, Section 2.1; without the mixture), location
  sigmoid(logits) in [0, 1] and a learnt log-scale per channel (one number per colour channel, as
  a calibrated decoder's shared variance: Rybkin, Daniilidis and Levine, Simple and Effective VAE
  Training with Calibrated Decoders, ICML 2021). Training and evaluation both score the 8-bit
  values (`bench.sdk.likelihood.quantise`), so the loss is a normalised -log p(x|z) and NLL in
  bits per dimension compares with the literature's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.likelihood import binarise, quantise


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over all but the first dimension: (m, ...) -> (m,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Bernoulli cross-entropy summed over pixels (nats per image)."""
    return -bernoulli_log_prob(logits, x).mean()


def discretised_logistic_log_prob(
    location: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, levels: int = 256
) -> torch.Tensor:
    """log P(x) of values x on the grid k / (levels - 1) under a logistic of `location` (in [0, 1]) and scale
    exp(`log_scale`) discretised to that grid (the end bins take the tails), summed over all but the first
    dimension: (m, ...) -> (m,).

    An inner bin's mass sigmoid(u) - sigmoid(l) (u, l its edges in scale units) is computed in log space as
    u - softplus(u) - softplus(l) + log(1 - exp(l - u)), exact where the difference would underflow (PixelCNN++
    replaces the mass there by the density at the bin's centre times its width)."""
    half_bin = 0.5 / (levels - 1)
    inverse_scale = torch.exp(-log_scale)
    centred = x - location
    upper = inverse_scale * (centred + half_bin)
    lower = inverse_scale * (centred - half_bin)
    log_lowest = F.logsigmoid(upper)  # P(X <= x + half bin): the lowest bin takes the lower tail
    log_highest = -F.softplus(lower)  # P(X > x - half bin): the highest bin takes the upper tail
    log_inner = upper - F.softplus(upper) - F.softplus(lower) + torch.log(-torch.expm1(lower - upper))
    log_p = torch.where(x < half_bin, log_lowest, torch.where(x > 1 - half_bin, log_highest, log_inner))
    return log_p.flatten(1).sum(1)


class BernoulliObservation(nn.Module):
    """Grey-scale images: Bernoulli(sigmoid(logits)) on the binarised image (module docstring)."""

    description = "Bernoulli(sigmoid(decoder)) on binarised images (x > 0.5)"

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return binarise(x)

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | logits) per row (m,) of observed (binarised) x."""
        return bernoulli_log_prob(logits, x)

    def loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The training loss on continuous [0, 1] images: the cross-entropy, nats per image (batch mean)."""
        return reconstruction_loss(logits, x)


class DiscretisedLogisticObservation(nn.Module):
    """Colour images: a discretised logistic per 8-bit subpixel, location sigmoid(logits), a learnt scale per
    channel (module docstring)."""

    description = "discretised logistic on 8-bit values, location sigmoid(decoder), a learnt scale per channel"
    # exp(-7) is far below one level (1/255 = exp(-5.5)): the floor only guards the division.
    min_log_scale = -7.0

    def __init__(self, channels: int, initial_scale: float = 0.1):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((channels, 1, 1), math.log(initial_scale)))

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return quantise(x)

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log P(x | logits) per row (m,) of observed (8-bit) x, in nats."""
        log_scale = self.log_scale.clamp_min(self.min_log_scale).to(logits.dtype)
        return discretised_logistic_log_prob(torch.sigmoid(logits), log_scale, x)

    def loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log P(x | logits) of the 8-bit values of x, nats per image (batch mean)."""
        return -self.log_prob(logits, quantise(x)).mean()


def observation_for(image_shape: tuple[int, int, int]) -> BernoulliObservation | DiscretisedLogisticObservation:
    """The observation model of images of this (C, H, W) shape: Bernoulli for grey, discretised logistic for colour."""
    channels = image_shape[0]
    return BernoulliObservation() if channels == 1 else DiscretisedLogisticObservation(channels)


class ObservedModel(nn.Module):
    """A network whose decoder output is scored by `self.observation` (set it with `observation_for`)."""

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # Checkpoints of the method versions before observation models existed hold grey-scale Bernoulli models.
        self._modules.setdefault("observation", BernoulliObservation())


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I).

    The noise is drawn on the CPU `generator` and moved, so CPU and CUDA runs draw the same numbers.
    """
    eps = torch.randn(mean.shape, generator=generator).to(mean.device)
    return mean + eps * torch.exp(0.5 * logvar)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over the latent dimensions: (b, ...) -> (b,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
