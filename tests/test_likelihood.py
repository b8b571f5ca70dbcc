"""The shared importance-sampling estimators (continuous and discrete latents), the binarisation, the VAE's
log_likelihood capability and the nll metric.

Expected values come from independent computations: the closed-form marginals of a
linear-Gaussian model (torch.distributions.MultivariateNormal) and of a factorised model over
discrete code maps, and an ELBO computed with torch.distributions (Bernoulli log-probabilities
and the analytic Gaussian KL).
"""

import math

import pytest
import torch
from conftest import requires_data
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from bench.harness.evaluation import evaluate
from bench.sdk.likelihood import binarise, discrete_importance_log_likelihood, iwae_log_likelihood
from bench.sdk.method import PROFILES
from bench.sdk.training import seeded_init
from methods.vae import VAE, ConvVAE, VAEConfig, negative_elbo
from metrics import profile_settings

# -- a linear-Gaussian latent model with a closed-form marginal ------------------------------
# z ~ N(0, I_d), x | z ~ N(W z + b, sigma^2 I_D)  =>  x ~ N(b, W W^T + sigma^2 I_D).
# W = Q diag(s) with orthonormal columns Q makes W^T W diagonal, so the exact posterior
# N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1, is a diagonal Gaussian.
D, LATENT, SIGMA = 6, 3, 0.7


@pytest.fixture(scope="module")
def linear_gaussian():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=g, dtype=torch.float64))
    w = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    marginal = MultivariateNormal(b, covariance_matrix=w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((5,))

    def log_px_given_z(x_rows, z):
        return Normal(z @ w.T + b, SIGMA).log_prob(x_rows).sum(-1)

    post_var = 1.0 / (1.0 + (w**2).sum(0) / SIGMA**2)  # diagonal of S

    def exact_posterior(xb):
        mean = ((xb - b) @ w / SIGMA**2) * post_var
        return mean, post_var.log().expand_as(mean)

    def mismatched(xb):  # shifted and too wide: valid but inefficient
        mean, logvar = exact_posterior(xb)
        return mean + 0.3, logvar + 0.8

    return {
        "x": x,
        "exact": marginal.log_prob(x),
        "lik": log_px_given_z,
        "posterior": exact_posterior,
        "mismatched": mismatched,
    }


# -- a factorised model over discrete code maps, with a closed-form marginal ---------------------
# P positions with M codes each: p(c) = prod_p pi_p(c_p), p(x|c) = prod_p f_p(x, c_p). Then the
# posterior is the product of the per-position posteriors and log p(x) = sum_p logsumexp_m.
P, M = 5, 4


@pytest.fixture(scope="module")
def factorised():
    g = torch.Generator().manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(P, M, generator=g, dtype=torch.float64) * 2, -1)
    x = torch.randn(6, P, generator=g, dtype=torch.float64)
    centres = torch.randn(P, M, generator=g, dtype=torch.float64)

    def log_f(x_rows, codes):  # (m, P), (m, P) -> (m, P): a Gaussian around the code's centre
        return -0.5 * (x_rows - centres.gather(1, codes.T).T).pow(2) - 0.5 * math.log(2 * math.pi)

    def log_joint(x_rows, codes):
        return (log_f(x_rows, codes) + log_pi.gather(1, codes.T).T).sum(1)

    per_position = (
        -0.5 * (x[:, :, None] - centres[None]).pow(2) - 0.5 * math.log(2 * math.pi) + log_pi[None]
    )  # (n, P, M)
    exact = torch.logsumexp(per_position, -1).sum(1)

    def posterior(xb):
        return torch.log_softmax(-0.5 * (xb[:, :, None] - centres[None]).pow(2) + log_pi[None], -1)

    def mismatched(xb):  # too flat and biased towards code 0: valid but inefficient
        logits = posterior(xb) * 0.3
        logits[..., 0] += 1.0
        return torch.log_softmax(logits, -1)

    return {"x": x, "exact": exact, "lik": log_joint, "posterior": posterior, "mismatched": mismatched}


# -- what both estimators must do, each on its model ----------------------------------------
@pytest.fixture(params=["linear_gaussian", "factorised"])
def toy(request):
    """(estimator, model): the linear-Gaussian model for the IWAE estimator, the factorised one for the discrete estimator."""
    estimator = {"linear_gaussian": iwae_log_likelihood, "factorised": discrete_importance_log_likelihood}[
        request.param
    ]
    return estimator, request.getfixturevalue(request.param)


@pytest.mark.parametrize("k", [1, 7])
def test_exact_posterior_gives_the_exact_marginal_with_zero_variance(toy, k):
    estimate_log_px, m = toy
    n = len(m["x"])
    estimate, ess = estimate_log_px(
        m["x"], m["posterior"], m["lik"], k, torch.Generator().manual_seed(1), return_ess=True
    )
    assert estimate.dtype == torch.float64 and estimate.shape == (n,)
    torch.testing.assert_close(estimate, m["exact"], rtol=0, atol=1e-10)
    torch.testing.assert_close(ess, torch.full((n,), float(k), dtype=torch.float64), rtol=1e-9, atol=0)


def test_mismatched_proposal_converges_to_the_exact_marginal(toy):
    estimate_log_px, m = toy
    n, repeats = len(m["x"]), 8
    x = m["x"].repeat_interleave(repeats, 0)  # every row gets its own noise: 8 independent estimates per image
    estimates = estimate_log_px(x, m["mismatched"], m["lik"], 3000, torch.Generator().manual_seed(2)).view(n, repeats)
    error = estimates.mean(1) - m["exact"]
    standard_error = estimates.std(1) / math.sqrt(repeats)
    assert (error.abs() <= 5 * standard_error + 1e-3).all(), (error, standard_error)
    # The test has power: with K = 1 the same proposal is clearly below log p(x) (the ELBO gap).
    single = estimate_log_px(x, m["mismatched"], m["lik"], 1, torch.Generator().manual_seed(3)).view(n, repeats)
    assert (single.mean(1) < m["exact"] - 0.1).all()


def test_chunking_and_batching_do_not_change_the_noise(toy):
    estimate_log_px, m = toy
    run = lambda **kw: estimate_log_px(m["x"], m["mismatched"], m["lik"], 37, torch.Generator().manual_seed(4), **kw)  # noqa: E731
    reference = run(batch_size=64, chunk_size=10_000)
    for batch_size, chunk_size in [(1, 1), (2, 5), (3, 16), (5, 37), (6, 37), (4, 1000)]:
        torch.testing.assert_close(run(batch_size=batch_size, chunk_size=chunk_size), reference, rtol=0, atol=1e-12)
    assert not torch.equal(
        estimate_log_px(m["x"], m["mismatched"], m["lik"], 37, torch.Generator().manual_seed(5)), reference
    )


def test_bad_arguments_are_refused(toy):
    estimate_log_px, m = toy
    with pytest.raises(ValueError, match="num_samples"):
        estimate_log_px(m["x"], m["posterior"], m["lik"], 0, torch.Generator())
    with pytest.raises(ValueError, match="batch_size and chunk_size"):
        estimate_log_px(m["x"], m["posterior"], m["lik"], 3, torch.Generator(), chunk_size=0)


def test_codes_without_proposal_mass_are_never_drawn(factorised):
    f = factorised
    drawn = []

    def joint(x_rows, codes):
        drawn.append(codes)
        return f["lik"](x_rows, codes)

    def two_codes(xb):  # all mass on codes 1 and 2
        log_q = torch.full((xb.shape[0], P, M), -math.inf, dtype=torch.float64)
        log_q[..., 1:3] = math.log(0.5)
        return log_q

    estimate = discrete_importance_log_likelihood(f["x"], two_codes, joint, 200, torch.Generator().manual_seed(6))
    codes = torch.cat(drawn)
    assert torch.isfinite(estimate).all() and set(codes.unique().tolist()) == {1, 2}


def test_binarise_thresholds_at_one_half_and_keeps_the_floating_dtype():
    x = torch.tensor([0.0, 0.25, 0.5, 0.5001, 1.0], dtype=torch.float64)
    assert binarise(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and binarise(x).dtype == torch.float64
    assert binarise(x.float()).dtype == torch.float32
    with pytest.raises(TypeError, match="floating-point"):
        binarise(torch.tensor([0, 255], dtype=torch.uint8))


# -- the VAE capability on a small synthetic model (no data needed) ---------------------------
@pytest.fixture(scope="module")
def tiny_vae():
    method = VAE(VAEConfig(latent_dim=3, width=4))
    with seeded_init(0):
        method.model = ConvVAE((1, 8, 8), 3, 4)
        # Sharpen the decoder and give BatchNorm non-trivial running statistics, so log-weights
        # vary across z and train-mode BatchNorm would give different numbers.
        with torch.no_grad():
            method.model.decoder[-1].weight.mul_(8)
            for module in method.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_()
                    module.running_var.uniform_(0.5, 2.0)
    method.model.eval()
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return method, images


def _independent_elbo(model, x_bin, draws=4000, seed=7):
    """ELBO per image from torch.distributions: E_q[log Bernoulli(x | decoder(z))] - KL(q || N(0, I))."""
    g = torch.Generator().manual_seed(seed)
    elbos, errors = [], []
    with torch.no_grad():
        for image in x_bin:
            mean, logvar = model.encode(image[None])
            q = Normal(mean[0], torch.exp(0.5 * logvar[0]))
            z = q.loc + q.scale * torch.randn(draws, q.loc.shape[0], generator=g)
            reconstruction = (
                Bernoulli(logits=model.decode_logits(z))
                .log_prob(image.expand(draws, *image.shape))
                .flatten(1)
                .sum(1)
                .double()
            )
            kl = kl_divergence(q, Normal(0.0, 1.0)).sum().double()
            elbos.append(reconstruction.mean() - kl)
            errors.append(reconstruction.std() / math.sqrt(draws))
    return torch.stack(elbos), torch.stack(errors)


def test_single_sample_estimate_averages_to_the_elbo(tiny_vae):
    method, images = tiny_vae
    x_bin = (images > 0.5).float()
    repeats = 4000
    single = method.log_likelihood(images.repeat_interleave(repeats, 0), 1, torch.Generator().manual_seed(8)).view(
        4, repeats
    )
    elbo, elbo_error = _independent_elbo(method.model, x_bin)
    tolerance = 4 * torch.sqrt(single.var(1) / repeats + elbo_error**2)
    assert ((single.mean(1) - elbo).abs() <= tolerance).all(), (single.mean(1), elbo, tolerance)
    # The training loss (negative ELBO, kl_weight 1) is the same quantity.
    for i, image in enumerate(x_bin):
        with torch.no_grad():
            loss = negative_elbo(method.model, image.expand(4000, *image.shape), 1.0, torch.Generator().manual_seed(9))[
                "loss"
            ]
        assert abs(-float(loss) - float(elbo[i])) <= tolerance[i] + 4 * float(elbo_error[i])


def test_estimate_increases_with_the_number_of_samples(tiny_vae):
    method, images = tiny_vae
    repeats = 200
    x = images.repeat_interleave(repeats, 0)
    means, variances = [], []
    for k in (1, 10, 100):
        estimate = method.log_likelihood(x, k, torch.Generator().manual_seed(10 + k)).view(4, repeats)
        means.append(estimate.mean())
        # Monte-Carlo variance of the mean over all rows: within-image variance only (the images are fixed).
        variances.append(float((estimate.var(1) / repeats).sum() / 4**2))
    for lower in range(2):
        gap = means[lower + 1] - means[lower]
        assert gap > 3 * math.sqrt(variances[lower] + variances[lower + 1]), (means, variances)


def test_vae_likelihood_binarises_runs_in_eval_mode_and_is_batch_independent(tiny_vae):
    method, images = tiny_vae
    g = lambda: torch.Generator().manual_seed(11)
    full = method.log_likelihood(images, 16, g())
    # Binarising is part of the capability: a 0/1 copy of the images scores the same.
    torch.testing.assert_close(method.log_likelihood((images > 0.5).float(), 16, g()), full)
    # The first images get the same noise whatever follows; in eval mode BatchNorm makes them batch-independent.
    torch.testing.assert_close(method.log_likelihood(images[:2], 16, g()), full[:2], rtol=1e-6, atol=1e-4)
    method.model.train()
    try:
        torch.testing.assert_close(method.log_likelihood(images, 16, g()), full)
        assert method.model.training  # the caller's mode is restored
    finally:
        method.model.eval()
    method.likelihood_batch_size, method.likelihood_chunk_size = 3, 5
    try:
        torch.testing.assert_close(method.log_likelihood(images, 16, g()), full, rtol=1e-6, atol=1e-4)
    finally:
        method.likelihood_batch_size, method.likelihood_chunk_size = (
            VAE.likelihood_batch_size,
            VAE.likelihood_chunk_size,
        )


# -- the nll metric --------------------------------------------------------------------------
def test_nll_is_not_applicable_without_the_capability():
    class NoLikelihood:
        capabilities = frozenset({"latent"})

    samples, reference = torch.rand(3, 1, 8, 8), torch.rand(5, 1, 8, 8)
    for model in (NoLikelihood(), None):
        outcomes, _ = evaluate(samples, reference=reference, model=model, metric_names=["nll"])
        assert outcomes["nll"]["status"] == "not_applicable" and "value" not in outcomes["nll"]
        assert "log_likelihood" in outcomes["nll"]["reason"]


def test_nll_scores_the_binarised_reference_with_the_configured_settings(tiny_vae):
    method, images = tiny_vae
    reference = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    settings = {"nll_importance_samples": 5, "nll_max_images": 6}
    outcomes, _ = evaluate(
        reference[:2], reference=reference, model=method, metric_names=["nll"], seed=13, settings=settings
    )
    nll = outcomes["nll"]
    assert nll["status"] == "ok", nll
    direct = -method.log_likelihood((reference[:6] > 0.5).float(), 5, torch.Generator().manual_seed(13))
    assert nll["value"] == pytest.approx(float(direct.mean()), rel=1e-12)
    assert nll["std"] == pytest.approx(float(direct.std()), rel=1e-9)
    card = nll["card"]
    assert card["estimator"] == "IWAE" and card["importance_samples"] == 5 and card["n_images"] == 6
    assert card["observation_model"] == "Bernoulli on binarised images (x > 0.5)" and card["units"] == "nats per image"
    assert card["higher_is_better"] is False


def test_every_profile_has_evaluation_settings():
    samples = [profile_settings(p)["nll_importance_samples"] for p in PROFILES]
    assert samples == sorted(samples) and profile_settings("paper")["nll_importance_samples"] == 5000


# -- the real VAE on the real split ----------------------------------------------------------
@requires_data("fashion-mnist")
def test_smoke_vae_gives_finite_likelihoods_better_than_coin_flips(smoke_vae, fashion_split):
    x = fashion_split.reference[:32]
    log_px = smoke_vae.log_likelihood(x, 8, torch.Generator().manual_seed(0))
    assert log_px.shape == (32,) and log_px.dtype == torch.float64 and torch.isfinite(log_px).all()
    # Independent yardstick: every pixel a fair coin gives log p(x) = 784 log(1/2) for any image.
    assert float(log_px.mean()) > 784 * math.log(0.5)
    outcomes, _ = evaluate(
        x[:4],
        reference=fashion_split.reference,
        model=smoke_vae,
        metric_names=["nll"],
        seed=1,
        settings=profile_settings("smoke"),
    )
    assert outcomes["nll"]["status"] == "ok" and math.isfinite(outcomes["nll"]["value"])
    assert outcomes["nll"]["card"]["n_images"] == profile_settings("smoke")["nll_max_images"]
