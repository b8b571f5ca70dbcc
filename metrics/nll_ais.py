"""Negative log-likelihood of the held-out novel-class images under every decoder, by annealed importance sampling.

Wu, Burda, Salakhutdinov and Grosse, On the Quantitative Analysis of Decoder-Based Generative
Models, ICLR 2017 (`bench.sdk.ais`). Any method that decodes a latent drawn from a prior it
declares (`latent_prior`: GANs, the IMLE family, FIGR and the VAEs through their decoders) is
scored on one scale: the decoder's output is the mean of a Gaussian observation with a fixed
standard deviation sigma on the images' [0, 1] pixel values (grey or RGB, not binarised),

    p(x) = integral p(z) N(x; decode(z), sigma^2 I) dz,

in nats per image. The value is a density on continuous pixels, so it is not on the scale of
`nll` (Bernoulli on binarised images): compare methods with each other within this metric, at the
same sigma and budget (both on the card). AIS gives a stochastic lower bound of log p(x), so the
NLL is an upper bound that falls as the number of intermediate distributions grows.

Settings (per profile): sigma, the intermediate distributions T, chains per image, leapfrog
steps per HMC transition, and how many evaluation-reference images are scored (the first N in
the split's fixed order). Noise comes from a CPU generator seeded with `EvalInputs.seed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.sdk.ais import (
    SIGMOID_SCHEDULE_SHARPNESS,
    TARGET_STEP_ADAPTATION,
    ais_log_likelihood,
    gaussian_log_likelihood,
)
from bench.sdk.likelihood import nll_summary
from metrics import EvalInputs, Metric, MetricResult, MetricSettings, fixed_setting, profile_setting, register

BUDGET_RULE = (
    "a CPU budget, not the limit: on the quick imle of Fashion-MNIST 4-shot (20 images, 4 chains, 10 leapfrog steps) "
    "the NLL fell from -305.8 at T = 30 to -367.0 at T = 100 (docs/metrics.md#budgets); paper runs T = 1,000 with "
    "8 chains (Wu et al. ran up to 10,000 on a GPU); smoke tests the code path"
)


@dataclass(frozen=True)
class AisSettings(MetricSettings):
    ais_sigma: float = fixed_setting(
        0.1, "standard deviation of the Gaussian observation around decode(z), in [0, 1] pixels"
    )
    ais_steps: int = profile_setting(100, "intermediate distributions T", smoke=5, paper=1000)
    ais_chains: int = profile_setting(4, "independent AIS chains per image", smoke=2, paper=8)
    ais_leapfrog: int = profile_setting(5, "leapfrog steps per HMC transition", smoke=2, paper=10)
    ais_max_images: int | None = profile_setting(
        20, "score the first N evaluation-reference images (the split's fixed order); None: all", smoke=8, paper=50
    )
    ais_batch_size: int = fixed_setting(25, "images annealed together (the noise drawn depends on it)")
    ais_step_size: float = fixed_setting(0.05, "initial leapfrog step size (then adapted by the pilot chain)")

    def __post_init__(self) -> None:
        for name in ("ais_steps", "ais_chains", "ais_leapfrog", "ais_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.ais_sigma > 0:
            raise ValueError(f"ais_sigma must be > 0, got {self.ais_sigma}")


def ais_negative_log_likelihood(inputs: EvalInputs) -> MetricResult:
    settings = inputs.settings_as(AisSettings)
    max_images = settings.ais_max_images
    reference = inputs.reference if max_images is None else inputs.reference[: int(max_images)]
    if reference.shape[0] == 0:
        raise ValueError("no reference images to score")
    model = inputs.model
    prior = model.latent_prior()
    result = ais_log_likelihood(
        reference.float().cpu(),
        model.decode,
        prior,
        gaussian_log_likelihood(float(settings.ais_sigma)),
        torch.Generator().manual_seed(inputs.seed),
        steps=int(settings.ais_steps),
        chains=int(settings.ais_chains),
        leapfrog=int(settings.ais_leapfrog),
        step_size=float(settings.ais_step_size),
        batch_size=int(settings.ais_batch_size),
    )
    mean, details = nll_summary(result.log_px, reference[0].numel(), "AIS")
    n = reference.shape[0]
    return MetricResult(
        mean,
        details={
            **details,
            # Undefined with a single distribution (no transitions): left out rather than stored as NaN.
            **({"hmc_acceptance": result.acceptance} if math.isfinite(result.acceptance) else {}),
            "final_step_size": result.final_step_size,
        },
        card={
            "estimator": "AIS (Wu et al. 2017), HMC transitions, sigmoid schedule",
            "observation_model": f"Gaussian N(decode(z), sigma^2 I) on [0, 1] pixels, sigma = {settings.ais_sigma}",
            "sigma": float(settings.ais_sigma),
            "steps": int(settings.ais_steps),
            "chains": int(settings.ais_chains),
            "leapfrog": int(settings.ais_leapfrog),
            "initial_step_size": float(settings.ais_step_size),
            "step_adaptation": f"x{TARGET_STEP_ADAPTATION[0]} after an accepted proposal, x{TARGET_STEP_ADAPTATION[1]} after a rejected one, per chain",
            "schedule_sharpness": SIGMOID_SCHEDULE_SHARPNESS,
            "batch_size": int(settings.ais_batch_size),
            "prior": prior.description,
            "prior_components": len(prior.log_weights),
            "budget_rule": BUDGET_RULE,
            "n_images": n,
            "image_selection": "all" if n == inputs.reference.shape[0] else f"first {n} of the evaluation reference",
            "units": "nats per image (a density on continuous pixels)",
            "noise_seed": inputs.seed,
        },
    )


METRIC = register(
    Metric(
        compute=ais_negative_log_likelihood,
        higher_is_better=False,
        needs=frozenset({"reference", "capability:latent_prior"}),
        version="1",
        reference="Wu, Burda, Salakhutdinov and Grosse, On the Quantitative Analysis of Decoder-Based Generative Models, ICLR 2017",
        definition=(
            "Mean over the evaluation-reference images of -log p(x) in nats per image, p(x) the decoder's marginal "
            "under a Gaussian observation (sigma in the card) on [0, 1] pixels, estimated by annealed importance "
            "sampling from the method's prior (chains, steps and HMC settings in the card)."
        ),
        display_order=235,
        settings=AisSettings,
        roles=frozenset({"headline"}),
    ),
    __name__,
)
