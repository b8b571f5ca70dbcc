"""Importance-weighted log-likelihood estimation for latent-variable models (shared by every method).

Burda, Grosse and Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016. For a model
p(x, z) = p(z) p(x|z) and a proposal q(z|x) (the encoder's diagonal Gaussian),

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x) i.i.d.
             =  logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K.

The estimate is a stochastic lower bound: its expectation is the IWAE bound L_K, which equals
the ELBO at K = 1, increases with K and tends to log p(x) as K -> infinity (exact at any K
when q is the true posterior).

A method supplies three callables: `proposal(x) -> (mean, logvar)` of q(z|x), `log_px_given_z`
(the decoder's observation model) and, optionally, `log_prior` (default: standard normal).

Noise: z_k = mean + exp(logvar / 2) * eps_k with eps drawn from the caller's CPU
`torch.Generator` (then moved to the model's device, so CPU and CUDA draw the same numbers),
one `randn(K, latent_dim)` per image in image order. The numbers image i sees therefore
depend only on the generator's state and on the images before it, never on `batch_size` or
`chunk_size`: changing either changes the result only by floating-point rounding in the model.

Precision: log q(z|x) is computed from eps directly, log p(z) from z, both in float64; the
decoder's log p(x|z) runs in the model's dtype and is cast to float64 before the logsumexp.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Proposal = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogPrior = Callable[[torch.Tensor], torch.Tensor]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)



def check_estimator_arguments(num_samples: int, batch_size: int, chunk_size: int, generator: torch.Generator) -> None:
    """The arguments every importance-sampling estimator here takes: counts of at least 1 and a CPU generator."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    if generator.device.type != "cpu":
        raise ValueError("the noise generator must be a CPU torch.Generator (noise is drawn on CPU, then moved)")


@torch.no_grad()
def iwae_log_likelihood(
    x: torch.Tensor,
    proposal: Proposal,
    log_px_given_z: LogLikelihood,
    num_samples: int,
    generator: torch.Generator,
    *,
    log_prior: LogPrior = standard_normal_log_prob,
    batch_size: int = 64,
    chunk_size: int = 2048,
    return_ess: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted estimate of log p(x) in nats, one value per image.

    Args:
        x: (n, *event) observations, already in the form `log_px_given_z` scores (e.g.
            binarised for a Bernoulli model), on the model's device or the CPU.
        proposal: x_batch (b, *event) -> (mean, logvar), each (b, d): the diagonal Gaussian q(z|x).
        log_px_given_z: (x_rows (m, *event), z (m, d)) -> (m,): log p(x_i|z_i) row by row.
        num_samples: K, importance samples per image (K = 1 gives a single-sample ELBO estimate).
        generator: a CPU `torch.Generator`; the only source of randomness.
        log_prior: z (m, d) float64 -> (m,) log p(z); default the standard normal.
        batch_size: images per `proposal` call.
        chunk_size: at most this many (image, sample) pairs per `log_px_given_z` call (bounds
            memory); the K samples of a batch are split into chunks along K.
        return_ess: also return each image's effective sample size
            (sum w)^2 / sum w^2, in [1, K]; small values mean the estimate is unreliable.

    Returns:
        (n,) float64 CPU tensor of log p(x) estimates (and (n,) float64 ESS if `return_ess`).
    """
    check_estimator_arguments(num_samples, batch_size, chunk_size, generator)
    estimates, ess = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        b = xb.shape[0]
        mean, logvar = proposal(xb)
        if mean.shape != logvar.shape or mean.dim() != 2 or mean.shape[0] != b:
            raise ValueError(f"proposal must return (mean, logvar) of shape (batch, d), got {tuple(mean.shape)}, {tuple(logvar.shape)}")
        d = mean.shape[1]
        # One draw per image in image order: independent of batch_size and chunk_size.
        eps_all = torch.stack([torch.randn(num_samples, d, generator=generator, dtype=mean.dtype) for _ in range(b)])
        std = torch.exp(0.5 * logvar)
        logvar64 = logvar.double().cpu()
        per_chunk = max(1, chunk_size // b)
        log_w = torch.empty(b, num_samples, dtype=torch.float64)
        for k0 in range(0, num_samples, per_chunk):
            eps = eps_all[:, k0 : k0 + per_chunk]  # (b, s, d) on CPU
            s = eps.shape[1]
            z = mean[:, None, :] + std[:, None, :] * eps.to(mean.device)  # (b, s, d)
            x_rows = xb[:, None].expand(b, s, *xb.shape[1:]).reshape(b * s, *xb.shape[1:])
            log_lik = log_px_given_z(x_rows, z.reshape(b * s, d)).reshape(b, s).double().cpu()
            log_pz = log_prior(z.reshape(b * s, d).double()).reshape(b, s).cpu()
            # log q(z|x) for z = mean + std * eps: the Gaussian density at eps, minus log std.
            log_qz = -0.5 * (eps.double().pow(2) + logvar64[:, None, :] + _LOG_2PI).sum(-1)
            log_w[:, k0 : k0 + s] = log_lik + log_pz - log_qz
        lse = torch.logsumexp(log_w, dim=1)
        estimates.append(lse - math.log(num_samples))
        if return_ess:
            ess.append(torch.exp(2 * lse - torch.logsumexp(2 * log_w, dim=1)))
    log_px = torch.cat(estimates) if estimates else torch.empty(0, dtype=torch.float64)
    if return_ess:
        return log_px, (torch.cat(ess) if ess else torch.empty(0, dtype=torch.float64))
    return log_px
