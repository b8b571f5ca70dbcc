"""Annealed importance sampling (AIS) estimates of log p(x) for decoder-based generative models.

Wu, Burda, Salakhutdinov and Grosse, On the Quantitative Analysis of Decoder-Based Generative
Models, ICLR 2017; the estimator is Neal's (Annealed Importance Sampling, Statistics and
Computing, 2001). A decoder-based model is a prior p(z) and a decoder; with an observation model
p(x|z) around the decoder's output, log p(x) = log E_{p(z)} p(x|z), which AIS estimates for any
decoder, whether or not the model was trained with a likelihood (GANs, IMLE) or with one (VAEs).

For each image, `chains` independent chains start from the prior and move through the
intermediate distributions f_t(z) = p(z) p(x|z)^beta_t, 0 = beta_0 < ... < beta_T = 1, each
accumulating the log-weight sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}), with one Hamiltonian
Monte Carlo transition (`leapfrog` steps, identity mass) leaving f_t invariant after each step.
Then log p(x) ~= logsumexp_chains(log w) - log(chains): an unbiased estimate of p(x), so a
stochastic lower bound of log p(x) that tightens as T grows (exact in the limit).

The prior is given in a standard form (`LatentPrior`): a mixture over C discrete components
(InfoGAN's category, VCE's condition, a mixture prior's component) of standard normal noise u
mapped to the latent by a differentiable `to_latent(u, component)`, so a uniform code is
2 * Phi(u) - 1 and a Gaussian component is mean + std * u. HMC runs on u, whose prior is N(0, I)
in every case; each component is annealed separately and the components are combined with their
weights: log p(x) = logsumexp_c [log pi_c + log p(x | c)].

Step sizes: a pilot run of one chain per image and component adapts its leapfrog step as it goes,
multiplying it by 1.02 after an accepted HMC proposal and by 0.98 after a rejected one (Wu et
al.'s rule, which settles near an acceptance rate of 1/2); the estimate then runs `chains` fresh
chains with the pilot's step sizes, fixed in advance. A step adapted from a chain's own past makes
the transitions depend on the chain and biases the estimate (measured: on a linear-Gaussian
decoder the error stayed 0.2 nats at T = 1,000 with per-chain adaptation, 0.06 with a fixed step);
the pilot costs 1/chains of the estimate. The schedule is Grosse et al.'s sigmoid schedule (BDMC,
NeurIPS 2015), which spends its steps where beta is small and the distributions change fastest.

Noise (initial states, momenta, acceptance draws) comes from the caller's CPU generator, batch by
batch in image order; an estimate depends on `batch_size` as well as on the seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ToLatent = Callable[[torch.Tensor, int], torch.Tensor]

_LOG_2PI = math.log(2 * math.pi)
SIGMOID_SCHEDULE_SHARPNESS = 4.0  # Grosse et al.'s delta
TARGET_STEP_ADAPTATION = (1.02, 0.98)  # step size factor after an accepted, a rejected proposal


@dataclass(frozen=True)
class LatentPrior:
    """A model's prior in the form AIS anneals from (module docstring).

    noise_dim: dimensions of the standard normal noise u.
    log_weights: (C,) log mixture weights of the discrete components (logsumexp 0).
    to_latent: (u (m, noise_dim), component index) -> z (m, latent_dim), differentiable in u;
        `decode(to_latent(u, c))` is an image of the model for u ~ N(0, I), c ~ Categorical(pi).
    description: one line for the metric card (what the components and the map are).
    """

    noise_dim: int
    log_weights: torch.Tensor
    to_latent: ToLatent
    description: str = ""

    @staticmethod
    def standard_normal(dim: int) -> LatentPrior:
        """z ~ N(0, I_dim): one component, z = u."""
        return LatentPrior(dim, torch.zeros(1, dtype=torch.float64), lambda u, _component: u, f"N(0, I_{dim})")

    def __post_init__(self) -> None:
        weights = torch.as_tensor(self.log_weights, dtype=torch.float64)
        if weights.dim() != 1 or len(weights) == 0:
            raise ValueError(f"log_weights must be a non-empty 1-d tensor, got shape {tuple(weights.shape)}")
        if abs(float(torch.logsumexp(weights, 0))) > 1e-6:
            raise ValueError(f"the component weights must sum to 1, got {float(weights.exp().sum())}")
        object.__setattr__(self, "log_weights", weights)


def uniform_from_normal(u: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """U(low, high) from standard normal noise, differentiably: low + (high - low) * Phi(u)."""
    return low + (high - low) * 0.5 * (1 + torch.erf(u / math.sqrt(2)))


def gaussian_log_likelihood(sigma: float) -> LogLikelihood:
    """log N(x; mean, sigma^2 I) summed over each row's pixels: (x (m, ...), mean (m, ...)) -> (m,)."""
    if not sigma > 0:
        raise ValueError(f"the observation standard deviation must be > 0, got {sigma}")
    log_norm = math.log(sigma) + 0.5 * _LOG_2PI

    def log_likelihood(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return -(0.5 * ((x - mean) / sigma).pow(2) + log_norm).flatten(1).sum(1)

    return log_likelihood


def sigmoid_schedule(steps: int, sharpness: float = SIGMOID_SCHEDULE_SHARPNESS) -> torch.Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_T = 1 (float64, T + 1 values), dense where beta is small."""
    if steps < 1:
        raise ValueError(f"AIS needs at least 1 intermediate step, got {steps}")
    if steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    s = torch.sigmoid(sharpness * torch.linspace(-1, 1, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass(frozen=True)
class AisResult:
    log_px: torch.Tensor  # (n,) float64: the estimate per image
    acceptance: float  # mean HMC acceptance rate over chains and transitions
    final_step_size: float  # mean step size at the end


def ais_log_likelihood(
    x: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    prior: LatentPrior,
    log_px_given_mean: LogLikelihood,
    generator: torch.Generator,
    *,
    steps: int = 500,
    chains: int = 16,
    leapfrog: int = 10,
    step_size: float = 0.05,
    batch_size: int = 16,
) -> AisResult:
    """AIS estimate of log p(x) in nats per image (module docstring).

    Args:
        x: (n, *event) observations in the form `log_px_given_mean` scores, on the CPU.
        decode: latents (m, latent_dim) -> decoder outputs (m, *event) on the CPU, differentiable.
        prior: the model's prior as a `LatentPrior`.
        log_px_given_mean: (x_rows (m, *event), decoder outputs (m, *event)) -> (m,) log p(x|z).
        generator: a CPU `torch.Generator`, the only source of randomness.
        steps: T, intermediate distributions (T = 1 is importance sampling from the prior).
        chains: independent chains per image and component.
        leapfrog: leapfrog steps per HMC transition.
        step_size: the initial leapfrog step size (then adapted per chain).
        batch_size: images annealed together (all their chains and components in one batch).
    """
    if chains < 1 or leapfrog < 1 or batch_size < 1:
        raise ValueError(f"chains, leapfrog and batch_size must be >= 1, got {chains}, {leapfrog}, {batch_size}")
    if generator.device.type != "cpu":
        raise ValueError("the noise generator must be a CPU torch.Generator")
    betas = sigmoid_schedule(steps)
    estimates, acceptances, step_sizes = [], [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        anneal = functools.partial(_anneal, xb, decode, prior, log_px_given_mean, betas, leapfrog, generator)
        # Pilot: one chain per image and component adapts its step size as it goes; the estimate then anneals
        # `chains` fresh chains with the pilot's step sizes, fixed in advance, so that every transition leaves its
        # distribution invariant whatever the chains do (steps adapted from a chain's own past bias the estimate).
        _, _, schedule = anneal(1, torch.full((xb.shape[0] * len(prior.log_weights),), float(step_size)), None)
        log_px, acceptance, _ = anneal(chains, None, schedule)
        estimates.append(log_px)
        acceptances.append(acceptance)
        step_sizes.append(schedule[-1] if len(schedule) else torch.full((1,), float(step_size)))
    if not estimates:
        return AisResult(torch.empty(0, dtype=torch.float64), float("nan"), float("nan"))
    return AisResult(
        torch.cat(estimates), float(torch.cat(acceptances).mean()), float(torch.cat(step_sizes).double().mean())
    )


def _anneal(
    xb: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    prior: LatentPrior,
    log_px_given_mean: LogLikelihood,
    betas: torch.Tensor,
    leapfrog: int,
    generator: torch.Generator,
    chains: int,
    initial_step: torch.Tensor | None,
    schedule: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of images, `chains` chains per image and component, with the step sizes of `schedule`
    ((transitions, images x components), fixed) or, when it is None, adapted per chain from `initial_step`
    (one per image and component; the pilot, which needs `chains` = 1).

    Returns (log p(x) per image, acceptance rate per chain, the step sizes used (transitions, chains))."""
    b, components = xb.shape[0], len(prior.log_weights)
    # Rows ordered (image, component, chain).
    x_rows = xb[:, None].expand(b, components * chains, *xb.shape[1:]).reshape(-1, *xb.shape[1:])

    def log_likelihood(u: torch.Tensor) -> torch.Tensor:
        grouped = u.view(b, components, chains, -1)
        z = torch.stack(
            [prior.to_latent(grouped[:, c].reshape(b * chains, -1), c).view(b, chains, -1) for c in range(components)],
            1,
        )  # (image, component, chain, latent): the rows' order
        return log_px_given_mean(x_rows, decode(z.view(b * components * chains, -1))).double()

    rows = x_rows.shape[0]
    state = _State.at(torch.randn(rows, prior.noise_dim, generator=generator), log_likelihood)
    log_w = torch.zeros(rows, dtype=torch.float64)
    accepted = torch.zeros(rows, dtype=torch.float64)
    epsilon, used = initial_step, []
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * state.log_lik
        if t == len(betas) - 1:
            break  # a transition after the last weight update would not change the estimate
        if schedule is not None:
            epsilon = schedule[t - 1].repeat_interleave(chains)
        used.append(epsilon)
        state, accept = _hmc_transition(state, float(betas[t]), log_likelihood, epsilon[:, None], leapfrog, generator)
        accepted += accept.double()
        if schedule is None:
            epsilon = epsilon * torch.where(accept, TARGET_STEP_ADAPTATION[0], TARGET_STEP_ADAPTATION[1]).float()
    per_component = torch.logsumexp(log_w.view(b, components, chains), 2) - math.log(chains)
    transitions = len(betas) - 2  # none at T = 1: the acceptance rate is undefined (NaN)
    acceptance = accepted / transitions if transitions else torch.full((rows,), math.nan, dtype=torch.float64)
    steps_used = torch.stack(used) if used else torch.empty(0, rows)
    return torch.logsumexp(per_component + prior.log_weights, 1), acceptance, steps_used


@dataclass(frozen=True)
class _State:
    """A batch of chain states: the noise u, log p(x|u) and its gradient in u (reused by the next transition)."""

    u: torch.Tensor
    log_lik: torch.Tensor
    grad_log_lik: torch.Tensor

    @staticmethod
    def at(u: torch.Tensor, log_likelihood: Callable[[torch.Tensor], torch.Tensor]) -> _State:
        v = u.detach().requires_grad_(True)
        with torch.enable_grad():
            log_lik = log_likelihood(v)
            (grad,) = torch.autograd.grad(log_lik.sum(), v)
        return _State(u.detach(), log_lik.detach(), grad)


def _hmc_transition(
    state: _State,
    beta: float,
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
    epsilon: torch.Tensor,
    leapfrog: int,
    generator: torch.Generator,
) -> tuple[_State, torch.Tensor]:
    """One HMC transition per row targeting N(u; 0, I) p(x|u)^beta: (the new state, which rows accepted)."""

    def grad_log_target(s: _State) -> torch.Tensor:
        return beta * s.grad_log_lik - s.u

    momentum = torch.randn(state.u.shape, generator=generator)
    proposal, p = state, momentum + 0.5 * epsilon * grad_log_target(state)
    for step in range(leapfrog):
        proposal = _State.at(proposal.u + epsilon * p, log_likelihood)
        p = p + (epsilon if step < leapfrog - 1 else 0.5 * epsilon) * grad_log_target(proposal)
    start_energy = _energy(state, momentum, beta)
    end_energy = _energy(proposal, p, beta)
    # Metropolis: accept with probability min(1, exp(H_start - H_end)); a non-finite proposal is rejected.
    log_accept = (start_energy - end_energy).nan_to_num(nan=-math.inf)
    uniform = torch.rand(state.u.shape[0], generator=generator, dtype=torch.float64)
    accept = torch.log(uniform) < log_accept
    keep = accept[:, None]
    return (
        _State(
            torch.where(keep, proposal.u, state.u),
            torch.where(accept, proposal.log_lik, state.log_lik),
            torch.where(keep, proposal.grad_log_lik, state.grad_log_lik),
        ),
        accept,
    )


def _energy(state: _State, momentum: torch.Tensor, beta: float) -> torch.Tensor:
    """The Hamiltonian -log f_beta(u) + |p|^2 / 2 per row, up to a constant, in float64."""
    return 0.5 * state.u.double().pow(2).sum(1) - beta * state.log_lik + 0.5 * momentum.double().pow(2).sum(1)
