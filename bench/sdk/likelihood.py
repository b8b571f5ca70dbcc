"""Importance-sampling estimates of log p(x) for latent-variable models, and the observation they score.

Both estimators here share one structure: for each image, K latent samples from a proposal q,
log-weights log p(x, latent_k) - log q(latent_k|x), and

    log p(x) ~= logsumexp_k [log p(x, latent_k) - log q(latent_k|x)] - log K.

The estimate is a stochastic lower bound: its expectation is the IWAE bound L_K (Burda, Grosse
and Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016), which equals the ELBO at K = 1,
increases with K and tends to log p(x) as K -> infinity (exact at any K when q is the true
posterior). They differ in the latent variable:

- `iwae_log_likelihood`: a continuous z with a diagonal Gaussian proposal q(z|x) (the encoder's),
  drawn by reparameterisation. A method supplies `proposal(x) -> (mean, logvar)`,
  `log_px_given_z` (the decoder's observation model) and, optionally, `log_prior` (default:
  standard normal). Noise: z_k = mean + exp(logvar / 2) * eps_k, one `randn(K, latent_dim)` per
  image in image order. log q(z|x) is computed from eps directly, log p(z) from z, both in
  float64; the decoder's log p(x|z) runs in the model's dtype and is cast to float64.
- `discrete_importance_log_likelihood`: a map c of P categorical variables (a VQ-VAE's code map)
  with a factorised proposal q(c|x) = prod_p q_p(c_p|x), drawn by inverse-CDF sampling from one
  float64 `rand(K, P)` per image in image order.

Noise is drawn from the caller's CPU `torch.Generator` (then moved to the model's device, so CPU
and CUDA draw the same numbers). The numbers image i sees depend only on the generator's state
and on the images before it, never on `batch_size` or `chunk_size`: changing either changes the
result only by floating-point rounding in the model.

The observation (`observe`): grey-scale images are scored as their binarisation (`binarise`,
x > 0.5), what the `nll` metric passes and what a Bernoulli method scores whatever it is given;
colour images as their 8-bit values (`quantise`, round(255 x) / 255), scored by a probability
mass over the 256 levels of each subpixel (a discretised density), so that log p(x) is a log
probability on both kinds of data and NLLs of different methods compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Proposal = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogPrior = Callable[[torch.Tensor], torch.Tensor]
ProposalLogProbs = Callable[[torch.Tensor], torch.Tensor]
LogJoint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A batch's log-weights: (x_rows (b * s, *event), first sample k0, count s) -> (b, s) float64.
BatchLogWeights = Callable[[torch.Tensor, int, int], torch.Tensor]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


def binarise(x: torch.Tensor) -> torch.Tensor:
    """The observation of a grey-scale image in [0, 1]: 1 where x > 0.5, else 0, in x's (floating) dtype."""
    if not x.is_floating_point():
        raise TypeError(f"binarise takes floating-point images in [0, 1], got {x.dtype}")
    return (x > 0.5).to(x.dtype)


def quantise(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """The observation of a colour image in [0, 1]: each value rounded to the nearest of `levels` evenly spaced
    levels (k / (levels - 1)), in x's (floating) dtype."""
    if not x.is_floating_point():
        raise TypeError(f"quantise takes floating-point images in [0, 1], got {x.dtype}")
    top = levels - 1
    return torch.round(x.clamp(0, 1) * top) / top


def observe(x: torch.Tensor) -> torch.Tensor:
    """What a likelihood scores of images x (n, C, H, W) in [0, 1]: grey-scale (C = 1) binarised, colour
    (C > 1) quantised to 8 bits (module docstring)."""
    if x.dim() != 4:
        raise ValueError(f"observe takes images (n, C, H, W), got shape {tuple(x.shape)}")
    return binarise(x) if x.shape[1] == 1 else quantise(x)


def nll_summary(log_px: torch.Tensor, dims: int, source: str) -> tuple[float, dict]:
    """The mean NLL in nats per image of per-image estimates `log_px` (n,), and its details: the spread over
    images, the standard error of the mean and bits per dimension. Non-finite estimates are an error naming
    `source`."""
    if not torch.isfinite(log_px).all():
        raise ValueError(f"{source} returned {int((~torch.isfinite(log_px)).sum())} non-finite values")
    nll = -log_px.double()
    n = nll.shape[0]
    mean = float(nll.mean())
    std = float(nll.std()) if n > 1 else 0.0
    return mean, {
        "std": std,  # spread over images
        "sem": std / math.sqrt(n),  # standard error of the mean over images
        "bits_per_dim": mean / (dims * math.log(2)),
    }


def check_estimator_arguments(num_samples: int, batch_size: int, chunk_size: int, generator: torch.Generator) -> None:
    """The arguments every importance-sampling estimator here takes: counts of at least 1 and a CPU generator."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    if generator.device.type != "cpu":
        raise ValueError("the noise generator must be a CPU torch.Generator (noise is drawn on CPU, then moved)")


def _importance_sampled(
    x: torch.Tensor,
    draw: Callable[[torch.Tensor], BatchLogWeights],
    num_samples: int,
    batch_size: int,
    chunk_size: int,
    return_ess: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The loop both estimators share: per batch of images, `draw(x_batch)` draws the K samples of every
    image and returns the batch's log-weights function, called on chunks of at most `chunk_size`
    (image, sample) pairs; then logsumexp - log K (and the effective sample size) per image."""
    estimates, ess = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        b = xb.shape[0]
        log_weights = draw(xb)
        per_chunk = max(1, chunk_size // b)
        log_w = torch.empty(b, num_samples, dtype=torch.float64)
        for k0 in range(0, num_samples, per_chunk):
            s = min(per_chunk, num_samples - k0)
            x_rows = xb[:, None].expand(b, s, *xb.shape[1:]).reshape(b * s, *xb.shape[1:])
            log_w[:, k0 : k0 + s] = log_weights(x_rows, k0, s)
        lse = torch.logsumexp(log_w, dim=1)
        estimates.append(lse - math.log(num_samples))
        if return_ess:
            ess.append(torch.exp(2 * lse - torch.logsumexp(2 * log_w, dim=1)))
    log_px = torch.cat(estimates) if estimates else torch.empty(0, dtype=torch.float64)
    if return_ess:
        return log_px, (torch.cat(ess) if ess else torch.empty(0, dtype=torch.float64))
    return log_px


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
    """Importance-weighted estimate of log p(x) in nats, one value per image, over a continuous latent z.

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

    def draw(xb: torch.Tensor) -> BatchLogWeights:
        b = xb.shape[0]
        mean, logvar = proposal(xb)
        if mean.shape != logvar.shape or mean.dim() != 2 or mean.shape[0] != b:
            raise ValueError(
                f"proposal must return (mean, logvar) of shape (batch, d), got {tuple(mean.shape)}, {tuple(logvar.shape)}"
            )
        d = mean.shape[1]
        # One draw per image in image order: independent of batch_size and chunk_size.
        eps_all = torch.stack([torch.randn(num_samples, d, generator=generator, dtype=mean.dtype) for _ in range(b)])
        std = torch.exp(0.5 * logvar)
        logvar64 = logvar.double().cpu()

        def log_weights(x_rows: torch.Tensor, k0: int, s: int) -> torch.Tensor:
            eps = eps_all[:, k0 : k0 + s]  # (b, s, d) on CPU
            z = mean[:, None, :] + std[:, None, :] * eps.to(mean.device)  # (b, s, d)
            log_lik = log_px_given_z(x_rows, z.reshape(b * s, d)).reshape(b, s).double().cpu()
            log_pz = log_prior(z.reshape(b * s, d).double()).reshape(b, s).cpu()
            # log q(z|x) for z = mean + std * eps: the Gaussian density at eps, minus log std.
            log_qz = -0.5 * (eps.double().pow(2) + logvar64[:, None, :] + _LOG_2PI).sum(-1)
            return log_lik + log_pz - log_qz

        return log_weights

    return _importance_sampled(x, draw, num_samples, batch_size, chunk_size, return_ess)


@torch.no_grad()
def discrete_importance_log_likelihood(
    x: torch.Tensor,
    proposal_log_probs: ProposalLogProbs,
    log_joint: LogJoint,
    num_samples: int,
    generator: torch.Generator,
    *,
    batch_size: int = 16,
    chunk_size: int = 2048,
    return_ess: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampling estimate of log p(x) = log sum_c p(x, c) over discrete code maps c, in nats.

    The estimate of `iwae_log_likelihood` (module docstring) for a latent that is a map of P
    categorical variables: q(c|x) = prod_p q_p(c_p|x), drawn by inverse-CDF sampling and scored
    by its own probabilities, where `iwae_log_likelihood` reparameterises a Gaussian.

    Args:
        x: (n, *event) observations, already in the form `log_joint` scores (binarised).
        proposal_log_probs: x_batch (b, *event) -> (b, P, M) float64 log q_p(m | x), normalised
            over the M codes at each of the P positions (-inf allowed: never drawn).
        log_joint: (x_rows (m, *event), codes (m, P) int64) -> (m,) log p(x|c) + log p(c).
        num_samples: K code maps per image.
        generator: a CPU `torch.Generator`, the only source of randomness: one float64
            `rand(K, P)` per image in image order, so the numbers image i sees do not depend on
            `batch_size` or `chunk_size`.
        batch_size: images per `proposal_log_probs` call.
        chunk_size: at most this many (image, sample) pairs per `log_joint` call.
        return_ess: also return the effective sample size (sum w)^2 / sum w^2 per image.

    Returns:
        (n,) float64 CPU tensor (and the (n,) ESS if `return_ess`).
    """
    check_estimator_arguments(num_samples, batch_size, chunk_size, generator)

    def draw(xb: torch.Tensor) -> BatchLogWeights:
        b = xb.shape[0]
        log_q = proposal_log_probs(xb).double().cpu()  # (b, P, M)
        positions = log_q.shape[1]
        cdf = log_q.exp().cumsum(-1)
        u = torch.rand(b, num_samples, positions, generator=generator, dtype=torch.float64)
        # Inverse CDF: the first code whose cumulative probability exceeds u (zero-mass codes are skipped).
        threshold = u.transpose(1, 2) * cdf[..., -1:]
        codes = torch.searchsorted(cdf, threshold.contiguous(), right=True).clamp_(max=log_q.shape[2] - 1)  # (b, P, K)
        log_qc = log_q.gather(2, codes).sum(1)  # (b, K)
        codes = codes.transpose(1, 2)  # (b, K, P)

        def log_weights(x_rows: torch.Tensor, k0: int, s: int) -> torch.Tensor:
            chunk = codes[:, k0 : k0 + s]
            joint = log_joint(x_rows, chunk.reshape(b * s, positions).to(x_rows.device)).reshape(b, s).double().cpu()
            return joint - log_qc[:, k0 : k0 + s]

        return log_weights

    return _importance_sampled(x, draw, num_samples, batch_size, chunk_size, return_ess)
