"""VCE: the convertor's geometry, Algorithm 1's update order, the conditional likelihood, the one-shot transfer."""

import copy
import math

import pytest
import torch

from bench.sdk.likelihood import binarise
from bench.sdk.training import make_generator, seeded_init
from methods import METHODS
from methods._vae import gaussian_kl, reconstruction_loss, reparameterise
from methods.vce import VCE, ConvertorEncoder, VCEBudget, VCEConfig, columns_reached


def _model(shape=(1, 28, 28), channels=4, blocks=1):
    with seeded_init(0):
        return ConvertorEncoder(shape, channels, blocks, "none")


@pytest.mark.parametrize("blocks", [1, 3, 6])
def test_columns_reached_by_the_rule_match_the_convertors_gradients(blocks):
    model = _model(blocks=blocks)
    z = torch.randn(1, model.latent_dim, requires_grad=True)
    condition = torch.rand(1, 1, 28, 28)
    logits = model.convert_logits(z, condition)
    # Column c is reached when some output pixel of that column depends on z (autograd, independent of the formula).
    reached = sum(
        bool(torch.autograd.grad(logits[..., c].sum(), z, retain_graph=True)[0].abs().sum() > 0) for c in range(28)
    )
    assert reached == columns_reached(28, blocks)
    assert (reached == 28) == (blocks >= 6)


def test_rule_has_two_numbers_per_row_laid_beside_that_row():
    model = _model(blocks=1)  # receptive radius 4: row r's noise cannot reach rows further than 4 away
    condition = torch.rand(1, 1, 28, 28)
    z = torch.zeros(1, model.latent_dim)
    base = model.convert_logits(z, condition)
    z_row = z.clone()
    z_row[0, 2 * 20] = 5.0  # the left noise value of row 20
    changed = (model.convert_logits(z_row, condition) - base).abs().sum(dim=(0, 1, 3)) > 0
    assert changed[20] and not changed[:16].any()


def test_lmvae_step_follows_algorithm_1():
    """Encoder gets grad L_E (converted image constant); convertor gets grad L_C with z_r from the UPDATED encoder."""
    cfg = VCEConfig()
    method = VCE(cfg)
    method.model = _model(blocks=1)
    x, condition = torch.rand(5, 1, 28, 28), torch.rand(1, 1, 28, 28).expand(5, 1, 28, 28)
    before = copy.deepcopy(method.model)
    sgd = lambda module: torch.optim.SGD(module.parameters(), lr=0.01)  # noqa: E731 - update = -0.01 * gradient
    method._lmvae_step(x, condition, sgd(method.model.encoder), sgd(method.model.convertor), make_generator(3), 0)

    # Independent computation of both losses from equations 11 and 12 with the same noise.
    reference = copy.deepcopy(before)
    mean, logvar = reference.encode(x, condition)
    logits = reference.convert_logits(reparameterise(mean, logvar, make_generator(3)), condition)
    y = torch.sigmoid(logits)
    data = 0.85 * reconstruction_loss(logits, x) + 0.15 * reconstruction_loss(logits, condition)
    kl = gaussian_kl(mean, logvar).mean()
    l_e = kl + 0.2 * torch.relu(50 - gaussian_kl(*reference.encode(y.detach(), condition))).mean() + data
    encoder_grads = torch.autograd.grad(l_e, list(reference.encoder.parameters()), retain_graph=True)
    with torch.no_grad():
        for p, g in zip(reference.encoder.parameters(), encoder_grads):
            p -= 0.01 * g
    l_c = kl.detach() + 0.2 * gaussian_kl(*reference.encode(y, condition)).mean() + data
    convertor_grads = torch.autograd.grad(l_c, list(reference.convertor.parameters()))
    with torch.no_grad():
        for p, g in zip(reference.convertor.parameters(), convertor_grads):
            p -= 0.01 * g
    for got, want in zip(method.model.parameters(), reference.parameters()):
        assert torch.allclose(got, want, atol=1e-6)
    assert any(
        not torch.equal(a, b) for a, b in zip(method.model.convertor.parameters(), before.convertor.parameters())
    )


def _prior_monte_carlo(model, x_bin, condition, draws=200_000, seed=11):
    """log p(x | q) = log E_{z ~ N(0, I)} p(x | z, q), by plain Monte Carlo from the prior (no encoder involved)."""
    z = torch.randn(draws, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model.convert_logits(z, condition.expand(draws, *condition.shape[1:]))
        log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(x_bin.expand_as(logits)).flatten(1).sum(1)
    return float(torch.logsumexp(log_lik.double(), 0) - math.log(draws))


def test_conditional_likelihood_is_the_mixture_over_support_conditions():
    method = VCE()
    method.model = _model(shape=(1, 4, 4), channels=4, blocks=1).eval()  # 8 latent numbers: prior MC is exact enough
    a, b = torch.rand(2, 1, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    x_bin = binarise(x)
    p_a, p_b = _prior_monte_carlo(method.model, x_bin, a), _prior_monte_carlo(method.model, x_bin, b)

    method.conditions = a
    single = float(method.log_likelihood(x, 4000, make_generator(0))[0])
    assert single == pytest.approx(p_a, abs=0.05)
    method.conditions = torch.cat([a, b])
    mixture = float(method.log_likelihood(x, 8000, make_generator(0))[0])
    assert mixture == pytest.approx(math.log((math.exp(p_a) + math.exp(p_b)) / 2), abs=0.05)


def test_decode_converts_the_indexed_condition_and_carries_no_gradient_to_the_index():
    method = VCE()
    method.model = _model(blocks=1).eval()
    method.conditions = torch.rand(3, 1, 28, 28)
    z = method.sample_latent(4, make_generator(0))
    z[:, -1] = torch.tensor([2.0, 0.0, 1.0, 2.0])
    z.requires_grad_(True)
    out = method.decode(z)
    expected = torch.sigmoid(method.model.convert_logits(z[:, :-1], method.conditions[[2, 0, 1, 2]]))
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert (z.grad[:, -1] == 0).all() and z.grad[:, :-1].abs().sum() > 0


def test_adapt_trains_nothing_on_the_new_class(fashion_split):
    method = VCE()
    method.pretrain(fashion_split.task, VCE.profiles["smoke"], 0)
    weights = copy.deepcopy(method.model.state_dict())
    method.adapt(fashion_split.task, VCE.profiles["smoke"], 0)
    assert all(torch.equal(weights[k], v) for k, v in method.model.state_dict().items())
    assert torch.equal(method.conditions, fashion_split.task.support)


def test_the_ablation_trains_without_the_lmvae_phase(fashion_split):
    ablation = METHODS.get("vce-vae")()
    ablation.fit(fashion_split.task, ablation.profiles["smoke"], 0)
    assert "lmvae" not in ablation.training_log and "vae-continued" in ablation.training_log
    full = METHODS.get("vce")()
    full.fit(fashion_split.task, full.profiles["smoke"], 0)
    assert "lmvae" in full.training_log and "vae-continued" not in full.training_log


def test_unknown_loss_and_classless_tasks_are_refused(fashion_split):
    with pytest.raises(ValueError, match="valid: lmvae, vae"):
        VCEConfig(loss="introvae")
    import dataclasses

    classless = dataclasses.replace(
        fashion_split.task, base_images=torch.empty(0, 1, 28, 28), base_labels=torch.empty(0, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="pairs of images of one class"):
        VCE().fit(classless, VCEBudget(1, 4, 0, 0, 1, 1), 0)
