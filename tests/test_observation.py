"""The observation models of the VAE family (methods/_vae.py) and `nll` on colour images.

The discretised logistic is checked against scipy's logistic distribution (bin masses as CDF
differences) and as a probability mass (it sums to one over the 256 levels); the colour `nll`
against the independent yardstick of a uniform model over 8-bit values (8 bits per dimension).
"""

import math

import numpy as np
import pytest
import torch
from conftest import requires_data
from scipy.stats import logistic

from bench.harness.checkpoints import load_checkpoint, save_checkpoint
from bench.harness.evaluation import evaluate
from bench.sdk.likelihood import observe, quantise
from bench.sdk.training import seeded_init
from methods._vae import (
    BernoulliObservation,
    DiscretisedLogisticObservation,
    discretised_logistic_log_prob,
    observation_for,
)
from methods.vae import VAE, ConvVAE, VAEBudget, VAEConfig

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _log_mass(location: float, log_scale: float) -> torch.Tensor:
    """log P(level) of every one of the 256 levels: (256,)."""
    x = LEVELS.view(256, 1)
    return discretised_logistic_log_prob(torch.full_like(x, location), torch.tensor(log_scale, dtype=torch.float64), x)


@pytest.mark.parametrize("location", [0.0, 0.002, 0.3, 0.5, 0.999, 1.0])
@pytest.mark.parametrize("log_scale", [-7.0, -5.0, -2.0, 1.0])
def test_the_discretised_logistic_is_a_probability_mass_over_the_256_levels(location, log_scale):
    log_p = _log_mass(location, log_scale)
    assert torch.isfinite(log_p).all()
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("location,log_scale", [(0.3, -3.0), (0.8, -1.0), (0.05, -4.0)])
def test_the_discretised_logistic_matches_scipys_cdf_differences(location, log_scale):
    scale, half = math.exp(log_scale), 0.5 / 255
    upper = logistic.cdf(LEVELS.numpy() + half, loc=location, scale=scale)
    lower = logistic.cdf(LEVELS.numpy() - half, loc=location, scale=scale)
    upper[-1], lower[0] = 1.0, 0.0  # the end bins take the tails
    mass = upper - lower
    reliable = mass > 1e-9  # where scipy's CDF difference has not cancelled to nothing
    assert reliable.sum() > 20
    np.testing.assert_allclose(_log_mass(location, log_scale).numpy()[reliable], np.log(mass[reliable]), rtol=1e-6)


def test_a_far_value_under_a_tiny_scale_is_finite_and_improbable():
    log_p = _log_mass(0.0, -7.0)
    assert torch.isfinite(log_p).all() and float(log_p[-1]) < -1000
    # A scale of 0.25 levels at level 0: the lowest bin holds sigmoid(2) of the mass, the next one nearly all the rest.
    assert float(log_p[0]) == pytest.approx(math.log(1 / (1 + math.exp(-0.5 / 255 / math.exp(-7.0)))), rel=1e-9)
    assert float(torch.logsumexp(log_p[:2], 0)) > math.log(0.99)


def test_the_observation_model_follows_the_channel_count():
    assert isinstance(observation_for((1, 28, 28)), BernoulliObservation)
    colour = observation_for((3, 32, 32))
    assert isinstance(colour, DiscretisedLogisticObservation) and colour.log_scale.shape == (3, 1, 1)
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(observe(x), quantise(x)) and torch.equal(observe(x[:, :1]), (x[:, :1] > 0.5).float())
    assert torch.equal(quantise(quantise(x)), quantise(x))  # the observation of an observation is itself
    assert torch.allclose(quantise(x) * 255, (quantise(x) * 255).round())


def test_the_colour_loss_is_the_negative_log_probability_of_the_8_bit_image():
    observation = DiscretisedLogisticObservation(3)
    g = torch.Generator().manual_seed(1)
    logits, x = torch.randn(4, 3, 5, 5, generator=g), torch.rand(4, 3, 5, 5, generator=g)
    # Training scores the 8-bit values, so a value inside one level's bin has the level's loss.
    nudged = quantise(x) + 0.4 / 255 * (torch.rand(x.shape, generator=g) - 0.5)
    assert float(observation.loss(logits, nudged)) == pytest.approx(float(observation.loss(logits, x)), rel=1e-6)
    assert float(observation.loss(logits, x)) == pytest.approx(-float(observation.log_prob(logits, quantise(x)).mean()))


def test_a_checkpoint_from_before_observation_models_loads_as_a_bernoulli_model(tmp_path):
    method = VAE(VAEConfig(latent_dim=3, width=4))
    with seeded_init(0):
        method.model = ConvVAE((1, 8, 8), 3, 4).eval()
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = method.log_likelihood(images, 4, torch.Generator().manual_seed(3))
    del method.model._modules["observation"]  # what an older method version pickled
    path = tmp_path / "old.pt"
    restored = load_checkpoint(path, save_checkpoint(path, method))
    assert isinstance(restored.model.observation, BernoulliObservation)
    torch.testing.assert_close(restored.log_likelihood(images, 4, torch.Generator().manual_seed(3)), expected)


@pytest.fixture(scope="module")
def cifar_vae():
    from bench.data.splits import make_split

    split = make_split("cifar10", shots=4, seed=0)
    method = VAE(VAEConfig(latent_dim=16, width=16))
    method.fit(split.task, VAEBudget(pretrain_steps=150, finetune_steps=10, pool_size=32), 0)
    return method, split


@requires_data("cifar10")
def test_nll_applies_on_colour_and_ranks_cifar_images_above_noise(cifar_vae):
    method, split = cifar_vae
    reference = split.reference[:24]
    noise = torch.rand(reference.shape, generator=torch.Generator().manual_seed(4))
    settings = {"nll_importance_samples": 8, "nll_max_images": None}
    scores = {}
    for name, images in (("real", reference), ("noise", noise)):
        outcomes, _ = evaluate(
            images[:2], reference=images, model=method, metric_names=["nll"], seed=5, settings=settings
        )
        assert outcomes["nll"]["status"] == "ok", outcomes["nll"]
        scores[name] = outcomes["nll"]
    real = scores["real"]
    assert real["card"]["observation_model"].startswith("8-bit values")
    direct = -method.log_likelihood(quantise(reference), 8, torch.Generator().manual_seed(5))
    assert real["value"] == pytest.approx(float(direct.mean()), rel=1e-9)
    # A uniform model over the 256 levels scores 8 bits per dimension; the trained model must do better on real
    # images, and worse on noise than on real images.
    assert real["bits_per_dim"] == pytest.approx(real["value"] / (3 * 32 * 32 * math.log(2)))
    assert real["bits_per_dim"] < 8 and scores["noise"]["value"] > real["value"]
    assert float(method.model.observation.log_scale.mean()) < math.log(0.1)  # the scale was learnt, sharper
