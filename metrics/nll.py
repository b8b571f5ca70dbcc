"""Negative log-likelihood of the held-out novel-class images, in nats per image (IWAE estimate).

Burda, Grosse and Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (the estimator,
shared in `bench.sdk.likelihood`). The images scored are the evaluation reference (the novel
class's TEST images, never shown to the method), made discrete by `bench.sdk.likelihood.observe`
(what the methods score too), so that log p(x) is a log probability and every method is scored on
the same data: grey-scale images binarised at 0.5 (the observation model of the benchmark's grey
data is Bernoulli on binarised images), colour images at their 8-bit values (each method gives a
probability mass over the 256 levels of a subpixel, e.g. a discretised logistic; the details
carry bits per dimension, the unit of the colour-image literature). The method computes log p(x)
through its `log_likelihood` capability.

Settings (`NllSettings`, set per profile): `nll_importance_samples` (K) and `nll_max_images`
(score the first N reference images in the split's fixed order; None = all). The IWAE estimate
is a stochastic lower bound on log p(x) that tightens with K, so the NLL is an upper bound that
decreases with K: values are comparable only at the same K (in the card). Noise comes from a CPU
generator seeded with `EvalInputs.seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.sdk.likelihood import nll_summary, observe
from metrics import EvalInputs, Metric, MetricResult, MetricSettings, profile_setting, register

GREY_OBSERVATION = "Bernoulli on binarised images (x > 0.5)"
COLOUR_OBSERVATION = "8-bit values round(255 x) / 255, a probability mass over the 256 levels of each subpixel"
BUDGET_RULE = (
    "K per profile: quick the smallest K of the measured curve within 5% of K = 1,000 (docs/metrics.md#budgets); "
    "paper 5,000 (the IWAE paper); smoke 8 (a test of the code path)"
)


@dataclass(frozen=True)
class NllSettings(MetricSettings):
    # Budget: K = 30 is the smallest K within 5% of K = 1,000 on vae, vqvae and vce (docs/metrics.md#budgets,
    # results/curves/); `paper` keeps the IWAE paper's K = 5,000. N = None scores all reference images.
    nll_importance_samples: int = profile_setting(30, "IWAE importance samples K per image", smoke=8, paper=5000)
    nll_max_images: int | None = profile_setting(
        None, "score the first N evaluation-reference images (the split's fixed order); None: all of them", smoke=64
    )


def negative_log_likelihood(inputs: EvalInputs) -> MetricResult:
    settings = inputs.settings_as(NllSettings)
    k = int(settings.nll_importance_samples)
    max_images = settings.nll_max_images
    reference = inputs.reference if max_images is None else inputs.reference[: int(max_images)]
    if reference.shape[0] == 0:
        raise ValueError("no reference images to score")
    x = observe(reference)
    generator = torch.Generator().manual_seed(inputs.seed)
    log_px = torch.as_tensor(inputs.model.log_likelihood(x, k, generator)).double().cpu()
    if log_px.shape != (x.shape[0],):
        raise ValueError(f"log_likelihood returned shape {tuple(log_px.shape)}, expected ({x.shape[0]},)")
    mean, details = nll_summary(log_px, x[0].numel(), "log_likelihood")
    n = x.shape[0]
    return MetricResult(
        mean,
        details=details,
        card={
            "estimator": "IWAE",
            "importance_samples": k,
            "budget_rule": BUDGET_RULE,
            "observation_model": GREY_OBSERVATION if x.shape[1] == 1 else COLOUR_OBSERVATION,
            "n_images": n,
            "image_selection": "all" if n == inputs.reference.shape[0] else f"first {n} of the evaluation reference",
            "units": "nats per image",
            "noise_seed": inputs.seed,
            **(
                {"model_likelihood": description}
                if (description := getattr(inputs.model, "likelihood_description", ""))
                else {}
            ),
        },
    )


METRIC = register(
    Metric(
        compute=negative_log_likelihood,
        higher_is_better=False,
        needs=frozenset({"reference", "capability:log_likelihood"}),
        version="1",
        reference="Burda, Grosse and Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016",
        definition=(
            "Mean over the evaluation-reference images (grey binarised at 0.5, colour at 8 bits) of -log p(x) in "
            "nats per image, "
            "log p(x) estimated by the method with K importance samples (IWAE, K in the card)."
        ),
        display_order=230,
        settings=NllSettings,
        roles=frozenset({"headline"}),
    ),
    __name__,
)
