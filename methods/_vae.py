"""What every VAE-family method shares: the Gaussian posterior, its KL, the Bernoulli observation model.

Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014. Used by `vae`, `vqvae`,
`cadavqvae` and `vce`; the importance-weighted likelihood estimator is `bench.sdk.likelihood`.

Observation model: every grey-scale method here decodes Bernoulli logits. Training uses the
Bernoulli cross-entropy on the continuous [0, 1] values (standard practice; not a normalised
density for non-binary x); likelihoods are evaluated on binarised images
(`bench.sdk.likelihood.binarise`), the observation the `nll` metric scores for every method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over all but the first dimension: (m, ...) -> (m,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Bernoulli cross-entropy summed over pixels (nats per image)."""
    return -bernoulli_log_prob(logits, x).mean()


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I).

    The noise is drawn on the CPU `generator` and moved, so CPU and CUDA runs draw the same numbers.
    """
    eps = torch.randn(mean.shape, generator=generator).to(mean.device)
    return mean + eps * torch.exp(0.5 * logvar)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over the latent dimensions: (b, ...) -> (b,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
