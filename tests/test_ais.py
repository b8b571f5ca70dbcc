"""The AIS estimator against closed forms, and the `nll_ais` metric on real and synthetic models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_data

from bench.harness.evaluation import evaluate
from bench.sdk.ais import (
    LatentPrior,
    ais_log_likelihood,
    gaussian_log_likelihood,
    sigmoid_schedule,
    uniform_from_normal,
)
from bench.sdk.likelihood import binarise
from metrics import profile_settings


def _linear_gaussian(latent=3, pixels=16, sigma=0.3, images=6, seed=0):
    """A linear decoder W z + b with z ~ N(0, I): p(x) = N(x; b, W W^T + sigma^2 I) in closed form."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(pixels, latent, generator=g) * 0.8
    bias = torch.randn(pixels, generator=g) * 0.1
    marginal = torch.distributions.MultivariateNormal(
        bias.double(), (weight @ weight.T + sigma**2 * torch.eye(pixels)).double()
    )
    x = (bias.double() + torch.randn(images, pixels, generator=g, dtype=torch.float64) @ marginal.scale_tril.T).float()
    return x, (lambda z: z @ weight.T + bias), marginal.log_prob(x.double())


def _ais(x, decode, prior, sigma, steps, chains=8, seed=0, **kwargs):
    return ais_log_likelihood(
        x,
        decode,
        prior,
        gaussian_log_likelihood(sigma),
        torch.Generator().manual_seed(seed),
        steps=steps,
        chains=chains,
        **kwargs,
    )


def test_ais_recovers_the_closed_form_likelihood_of_a_linear_gaussian_decoder():
    x, decode, truth = _linear_gaussian(images=40)
    result = _ais(x, decode, LatentPrior.standard_normal(3), 0.3, steps=500, batch_size=40)
    error = result.log_px - truth
    # An unbiased estimate of p(x): over 40 images the errors average out (nats per image, 16 pixels).
    assert abs(float(error.mean())) < 0.25 and float(error.abs().median()) < 0.5
    assert 0.2 < result.acceptance < 0.95


def test_ais_tightens_as_the_number_of_intermediate_distributions_grows():
    x, decode, truth = _linear_gaussian(images=40, seed=1)
    gaps = [
        float((truth - _ais(x, decode, LatentPrior.standard_normal(3), 0.3, steps=t, batch_size=40).log_px).mean())
        for t in (1, 20, 500)
    ]
    # A stochastic lower bound: the gap to the truth shrinks with T (T = 1 is importance sampling from the prior).
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.25


def test_ais_combines_discrete_components_with_their_weights():
    """z = [u, one-hot(c)] with unequal weights: p(x) = sum_c pi_c N(x; W_u 0 + W_c[:, c] + b, W_u W_u^T + sigma^2 I)."""
    g = torch.Generator().manual_seed(3)
    pixels, noise, categories, sigma = 12, 2, 3, 0.25
    weight_u, weight_c = torch.randn(pixels, noise, generator=g), 2 * torch.randn(pixels, categories, generator=g)
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    covariance = (weight_u @ weight_u.T + sigma**2 * torch.eye(pixels)).double()
    components = [
        torch.distributions.MultivariateNormal(weight_c[:, c].double(), covariance) for c in range(categories)
    ]
    scale = components[0].scale_tril
    x = torch.stack(
        [
            weight_c[:, c % categories].double() + scale @ torch.randn(pixels, generator=g, dtype=torch.float64)
            for c in range(30)
        ]
    ).float()
    truth = torch.logsumexp(
        torch.stack([components[c].log_prob(x.double()) + pi[c].log() for c in range(categories)]), 0
    )

    def to_latent(u, c):
        return torch.cat([u, F.one_hot(torch.full((len(u),), c), categories).to(u.dtype)], 1)

    prior = LatentPrior(noise, pi.log(), to_latent)
    decode = lambda z: z[:, :noise] @ weight_u.T + z[:, noise:] @ weight_c.T  # noqa: E731
    error = _ais(x, decode, prior, sigma, steps=200, batch_size=30).log_px - truth
    assert abs(float(error.mean())) < 0.25 and float(error.abs().median()) < 0.5


def test_the_estimate_is_reproducible_from_its_seed_and_varies_with_it():
    x, decode, _ = _linear_gaussian()
    prior = LatentPrior.standard_normal(3)
    a, b, c = (_ais(x, decode, prior, 0.3, steps=20, seed=s).log_px for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_schedule_and_uniform_codes():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert betas.diff()[0] < betas.diff()[25]  # dense where beta is small
    u = torch.randn(200000, generator=torch.Generator().manual_seed(0))
    codes = uniform_from_normal(u)
    assert codes.min() > -1 and codes.max() < 1
    # U(-1, 1): mean 0, variance 1/3, each quarter of the interval a quarter of the draws.
    assert abs(float(codes.mean())) < 0.01 and abs(float(codes.var()) - 1 / 3) < 0.01
    assert torch.allclose(torch.histc(codes, 4, -1, 1) / len(codes), torch.full((4,), 0.25), atol=0.01)


def test_bad_priors_and_settings_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        LatentPrior(2, torch.tensor([0.0, 0.0]), lambda u, c: u)
    with pytest.raises(ValueError, match="standard deviation"):
        gaussian_log_likelihood(0.0)
    x, decode, _ = _linear_gaussian()
    with pytest.raises(ValueError, match="chains"):
        _ais(x, decode, LatentPrior.standard_normal(3), 0.3, steps=5, chains=0)


# -- a trained VAE: AIS against its IWAE bound under its own Bernoulli observation ------------
@requires_data("fashion-mnist")
def test_ais_is_at_least_as_tight_as_iwae_on_a_trained_vae(smoke_vae, fashion_split):
    x = binarise(fashion_split.reference[:10])
    iwae = smoke_vae.log_likelihood(x, 1000, torch.Generator().manual_seed(0))

    def bernoulli(x_rows, logits):
        return -F.binary_cross_entropy_with_logits(logits, x_rows, reduction="none").flatten(1).sum(1)

    ais = ais_log_likelihood(
        x,
        smoke_vae.model.decode_logits,
        smoke_vae.latent_prior(),
        bernoulli,
        torch.Generator().manual_seed(0),
        steps=100,
        chains=2,
        leapfrog=5,
    )
    # Both are stochastic lower bounds of the same log p(x): the annealed one is the tighter (higher) of the two.
    assert float(ais.log_px.mean()) >= float(iwae.mean())


@requires_data("fashion-mnist")
def test_nll_ais_metric_ranks_real_images_above_noise_and_states_its_budget(smoke_vae, fashion_split):
    reference = fashion_split.reference
    noise = torch.rand(reference[:8].shape, generator=torch.Generator().manual_seed(0))
    settings = profile_settings("smoke")
    scores = []
    for images in (reference, noise):
        outcomes, _ = evaluate(
            reference[:4], reference=images, model=smoke_vae, metric_names=["nll_ais"], settings=settings, seed=0
        )
        scores.append(outcomes["nll_ais"])
    real, noisy = scores
    assert real["status"] == "ok" and real["value"] < noisy["value"]
    card = real["card"]
    assert card["n_images"] == settings["ais_max_images"] and card["steps"] == settings["ais_steps"]
    assert card["chains"] == settings["ais_chains"] and card["sigma"] == 0.1 and card["prior_components"] == 1
    assert math.isclose(real["bits_per_dim"], real["value"] / (784 * math.log(2)))


@requires_data("fashion-mnist")
def test_a_single_distribution_has_no_acceptance_rate_and_stores_no_nan(smoke_vae, fashion_split):
    settings = {**profile_settings("smoke"), "ais_steps": 1, "ais_max_images": 2}
    outcomes, _ = evaluate(
        fashion_split.reference[:2],
        reference=fashion_split.reference,
        model=smoke_vae,
        metric_names=["nll_ais"],
        settings=settings,
        seed=0,
    )
    outcome = outcomes["nll_ais"]
    assert outcome["status"] == "ok" and "hmc_acceptance" not in outcome
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in outcome.values())
