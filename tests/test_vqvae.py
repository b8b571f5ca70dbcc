"""The VQ-VAE method: vector quantiser, residual block, PixelCNN prior, the likelihood over code maps.

Expected values come from independent computations: brute-force nearest neighbours
(torch.cdist), exhaustive enumeration of every code map of a tiny model (torch.distributions
Bernoulli for p(x|c)), and properties (causality by perturbation, normalisation, the sampler's
frequencies). The discrete importance-sampling estimator itself: test_likelihood.py.
"""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_data
from torch.distributions import Bernoulli

from bench.sdk.training import seeded_init
from methods._nets import ResidualBlock, VectorQuantiser
from methods.vqvae import VQVAE, ConvVQVAE, PixelCNNPrior, VQVAEConfig, paper_residual_block


# -- the vector quantiser ------------------------------------------------------------------------
@pytest.mark.parametrize("update", ["loss", "ema"])
def test_quantiser_returns_the_nearest_code_with_straight_through_gradients(update):
    g = torch.Generator().manual_seed(0)
    quantiser = VectorQuantiser(10, 4, update=update)
    with torch.no_grad():
        quantiser.codebook.copy_(torch.randn(10, 4, generator=g))
    quantiser.eval()  # no EMA update: the codebook stays what the brute force compares against
    z_e = torch.randn(3, 5, 6, 4, generator=g, requires_grad=True)  # vectors on the last dimension
    out = quantiser(z_e)
    vectors = z_e.detach().reshape(-1, 4)
    nearest = torch.cdist(vectors, quantiser.codebook.detach()).argmin(1)
    assert torch.equal(out.codes.reshape(-1), nearest)
    torch.testing.assert_close(out.z_q.detach().reshape(-1, 4), quantiser.codebook.detach()[nearest])
    # Straight-through: d(sum w * z_q)/d z_e = w exactly.
    weights = torch.randn(z_e.shape, generator=g)
    (grad,) = torch.autograd.grad((out.z_q * weights).sum(), z_e, retain_graph=True)
    torch.testing.assert_close(grad, weights)
    # The commitment term pulls z_e towards its code: its gradient is 2 (z_e - e) / batch.
    (grad,) = torch.autograd.grad(out.commitment_loss, z_e, retain_graph=True)
    torch.testing.assert_close(grad, 2 * (z_e - out.z_q).detach() / z_e.shape[0])
    if update == "loss":  # the codebook learns from the codebook term only, towards its assigned outputs
        (grad,) = torch.autograd.grad(
            (out.z_q * weights).sum(), quantiser.codebook, allow_unused=True, retain_graph=True
        )
        assert grad is None or not grad.any()
        (grad,) = torch.autograd.grad(out.codebook_loss, quantiser.codebook)
        counts = torch.bincount(nearest, minlength=10).float()
        sums = torch.zeros(10, 4).index_add_(0, nearest, vectors)
        torch.testing.assert_close(grad, 2 * (counts[:, None] * quantiser.codebook.detach() - sums) / z_e.shape[0])


def test_ema_moves_assigned_codes_to_the_mean_of_their_encoder_outputs():
    g = torch.Generator().manual_seed(1)
    quantiser = VectorQuantiser(4, 2, update="ema", decay=0.9)
    start = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [-20.0, -20.0]])  # code 3 is far from every output
    with torch.no_grad():
        quantiser.codebook.copy_(start)
        quantiser.ema_sum.copy_(start)
    centres = torch.tensor([[0.5, 0.5], [3.5, -0.5], [-0.5, 3.5]])
    assignment = torch.arange(60) % 3
    points = centres[assignment] + 0.2 * torch.randn(60, 2, generator=g)
    z_e = points.reshape(1, 6, 10, 2)
    mean_of = torch.stack([points[assignment == j].mean(0) for j in range(3)])
    quantiser.eval()
    quantiser(z_e)
    assert torch.equal(quantiser.codebook, start)  # eval mode never updates
    quantiser.train()
    quantiser(z_e)
    moved = (quantiser.codebook[:3] - mean_of).norm(dim=1)
    assert (moved < (start[:3] - mean_of).norm(dim=1)).all()
    for _ in range(200):  # the fixed point of the moving average is the mean of the assigned outputs
        quantiser(z_e)
    torch.testing.assert_close(quantiser.codebook[:3], mean_of, rtol=0, atol=1e-3)
    # An unused code keeps its place, also once its count has decayed to nothing (0.9^200 ~ 1e-9).
    torch.testing.assert_close(quantiser.codebook[3], start[3], rtol=1e-6, atol=0)


def test_codebook_initialisations_spread_as_named():
    torch.manual_seed(0)
    uniform = VectorQuantiser(64, 32, init="uniform").codebook
    normal = VectorQuantiser(64, 32, update="loss", init="normal").codebook.detach()
    assert uniform.abs().max() <= 1 / 64 and uniform.std() > 0.5 / (64 * 3**0.5)  # U(-a, a) has std a / sqrt(3)
    assert abs(float(normal.mean())) < 0.05 and abs(float(normal.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="unknown codebook init"):
        VectorQuantiser(4, 2, init="zeros")


def test_the_papers_residual_block_is_x_plus_conv1x1_relu_conv3x3_relu():
    torch.manual_seed(0)
    block = paper_residual_block(6)
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(1))
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1)]
    first, second = convs
    expected = x + F.conv2d(
        F.relu(F.conv2d(F.relu(x), first.weight, first.bias, padding=1)), second.weight, second.bias
    )
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    # Nothing but the two convolutions is learned: no normalisation, no PReLU slopes.
    assert isinstance(block, ResidualBlock)
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for c in convs for p in c.parameters())


# -- the PixelCNN prior --------------------------------------------------------------------------
def _influence(prior, map_shape, seed=0):
    """changed[q, p]: does changing the code at position q change the logits at position p?"""
    h, w = map_shape
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(prior.codebook_size, (1, h, w), generator=g)
    perturbed = codes.view(1, -1).repeat(h * w + 1, 1)  # row q + 1 changes position q; row 0 is the original
    positions = torch.arange(h * w)
    perturbed[positions + 1, positions] = (perturbed[positions + 1, positions] + 1) % prior.codebook_size
    with torch.no_grad():
        logits = prior(perturbed.view(-1, h, w)).flatten(2)  # (P + 1, K, P)
    return (logits[1:] - logits[:1]).abs().amax(1)  # (P, P)


@pytest.mark.parametrize("map_shape,first_kernel,layers", [((7, 7), 7, 5), ((5, 6), 3, 5), ((8, 8), 7, 5)])
def test_prior_logits_depend_on_exactly_the_earlier_positions(map_shape, first_kernel, layers):
    with seeded_init(0):
        prior = PixelCNNPrior(5, map_shape, 8, layers, first_kernel).eval()
    change = _influence(prior, map_shape)
    positions = change.shape[0]
    earlier = torch.ones(positions, positions).triu(1).bool()  # [q, p] with q < p
    assert change[~earlier].max() < 1e-6  # causal: position q never reaches positions <= q
    assert change[earlier].min() > 1e-7  # no blind spot: every earlier position is seen


def test_prior_depth_check_is_tight():
    # A prior deep enough for a 3x3 map (first_kernel // 2 + layers - 1 = 2) run on a 3x5 map has a blind spot.
    with seeded_init(0):
        prior = PixelCNNPrior(5, (3, 3), 8, 2, 3).eval()
    change = _influence(prior, (3, 5))
    earlier = torch.ones(15, 15).triu(1).bool()
    assert change[~earlier].max() < 1e-6
    assert (change[earlier] == 0).any()
    with pytest.raises(ValueError, match="does not cover"):
        PixelCNNPrior(5, (3, 5), 8, 2, 3)


@pytest.fixture(scope="module")
def tiny_prior():
    """3 codes on a 2x2 map: all 81 code maps can be enumerated. Sharpened so that p(c) is far from uniform."""
    with seeded_init(0):
        prior = PixelCNNPrior(3, (2, 2), 8, 2, 3)
        with torch.no_grad():
            prior.head[-1].weight.mul_(30)
            prior.embedding.weight.mul_(10)
    return prior.eval()


def _all_code_maps(codebook_size, map_shape):
    h, w = map_shape
    return torch.tensor(list(itertools.product(range(codebook_size), repeat=h * w))).view(-1, h, w)


def test_prior_is_normalised_and_ancestral_sampling_draws_from_it(tiny_prior):
    maps = _all_code_maps(3, (2, 2))
    with torch.no_grad():
        probs = tiny_prior.log_prob(maps).double().exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-5)
    assert probs.max() > 5 / 81 and probs.min() < 0.1 / 81  # far from uniform: the frequency check below has power
    n = 20000
    samples = tiny_prior.sample(n, torch.Generator().manual_seed(3))
    index = (samples.view(n, 4) * torch.tensor([27, 9, 3, 1])).sum(1)
    frequency = torch.bincount(index, minlength=81).double() / n
    tolerance = 5 * torch.sqrt(probs * (1 - probs) / n) + 2e-4
    assert ((frequency - probs).abs() <= tolerance).all()
    # Same generator state, same samples; another state, other samples.
    again = tiny_prior.sample(50, torch.Generator().manual_seed(4))
    assert torch.equal(again, tiny_prior.sample(50, torch.Generator().manual_seed(4)))
    assert not torch.equal(again, tiny_prior.sample(50, torch.Generator().manual_seed(5)))


# -- the method's log_likelihood on a tiny model whose code maps can be enumerated ---------------------
# A wide proposal (tau = 4 against codes ~2 apart): every code map gets drawn, so the estimate can converge.
TINY = VQVAEConfig(
    codebook_size=3,
    embedding_dim=2,
    width=4,
    prior_channels=8,
    prior_layers=2,
    prior_first_kernel=3,
    proposal_temperature=4.0,
)


@pytest.fixture(scope="module")
def tiny_method(tiny_prior):
    method = VQVAE(TINY)
    with seeded_init(0):
        method.model = ConvVQVAE((1, 8, 8), TINY)  # 2x2 code maps, 3 codes: 81 maps
        with torch.no_grad():
            method.model.quantiser.codebook.copy_(torch.randn(3, 2) * 2)
            method.model.decoder[-1].weight.mul_(6)  # a sharp decoder: the codes matter for p(x|c)
    method.prior = tiny_prior
    method.model.eval()
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return method, images


def _exact_log_px(method, x_bin):
    """log sum over all 81 code maps of p(x|c) p(c), with p(x|c) from torch.distributions."""
    maps = _all_code_maps(3, (2, 2))
    with torch.no_grad():
        logits = method.model.decode_logits(method.model.code_map(maps))
        log_prior = method.prior.log_prob(maps).double()
        log_lik = torch.stack(
            [Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(1).sum(1).double() for x in x_bin]
        )
    return torch.logsumexp(log_lik + log_prior, dim=1), log_lik + log_prior


def test_likelihood_estimate_matches_exhaustive_enumeration(tiny_method):
    method, images = tiny_method
    x_bin = (images > 0.5).float()
    exact, _ = _exact_log_px(method, x_bin)
    repeats = 6
    estimates = method.log_likelihood(
        images.repeat_interleave(repeats, 0), 2000, torch.Generator().manual_seed(7)
    ).view(4, repeats)
    error = estimates.mean(1) - exact
    assert (error.abs() <= 5 * estimates.std(1) / math.sqrt(repeats) + 2e-3).all(), (estimates.mean(1), exact)
    # The estimate is a lower bound that tightens with K: in expectation below log p(x), increasing in K.
    rows = images.repeat_interleave(200, 0)
    means = [float(method.log_likelihood(rows, k, torch.Generator().manual_seed(8 + k)).mean()) for k in (1, 10)]
    assert means[0] < means[1] < float(exact.mean()) + 1e-3


def test_zero_temperature_is_the_nearest_code_bound(tiny_method):
    method, images = tiny_method
    x_bin = (images > 0.5).float()
    exact, log_joint_all = _exact_log_px(method, x_bin)
    with torch.no_grad():
        z_e = method.model.encode(x_bin).permute(0, 2, 3, 1).reshape(-1, 2)
    nearest = torch.cdist(z_e, method.model.quantiser.codebook).argmin(1).view(4, 4)
    index = (nearest * torch.tensor([27, 9, 3, 1])).sum(1)  # row of the nearest map among the 81
    method.config = dataclasses.replace(TINY, proposal_temperature=0.0)
    try:
        bound = method.log_likelihood(images, 50, torch.Generator().manual_seed(9))
    finally:
        method.config = TINY
    torch.testing.assert_close(bound, log_joint_all[torch.arange(4), index], rtol=0, atol=1e-4)
    assert (bound <= exact + 1e-6).all()


def test_likelihood_binarises_restores_the_mode_and_is_deterministic(tiny_method):
    method, images = tiny_method
    g = lambda seed=10: torch.Generator().manual_seed(seed)
    full = method.log_likelihood(images, 16, g())
    assert full.dtype == torch.float64 and full.shape == (4,)
    torch.testing.assert_close(method.log_likelihood((images > 0.5).float(), 16, g()), full)
    torch.testing.assert_close(method.log_likelihood(images[:2], 16, g()), full[:2], rtol=1e-6, atol=1e-4)
    assert not torch.equal(method.log_likelihood(images, 16, g(11)), full)
    method.model.train()
    method.prior.train()
    try:
        torch.testing.assert_close(method.log_likelihood(images, 16, g()), full)
        assert method.model.training and method.prior.training
    finally:
        method.model.eval()
        method.prior.eval()
    method.likelihood_batch_size, method.likelihood_chunk_size = 3, 5
    try:
        torch.testing.assert_close(method.log_likelihood(images, 16, g()), full, rtol=1e-6, atol=1e-4)
    finally:
        method.likelihood_batch_size, method.likelihood_chunk_size = (
            VQVAE.likelihood_batch_size,
            VQVAE.likelihood_chunk_size,
        )


# -- shapes, latents and the protocol ------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 12, 20)])
def test_other_image_shapes_and_latents_on_the_codebook(shape):
    config = VQVAEConfig(codebook_size=8, embedding_dim=4, width=4, prior_channels=8)
    method = VQVAE(config)
    with seeded_init(0):
        method.model = ConvVQVAE(shape, config).eval()
        method.prior = PixelCNNPrior(
            8, method.model.map_shape, 8, config.prior_layers, config.prior_first_kernel
        ).eval()
    h, w = shape[1] // 4, shape[2] // 4
    assert method.latent_dim == 4 * h * w
    z = method.sample_latent(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, method.latent_dim)
    vectors = z.view(5, 4, h, w).permute(0, 2, 3, 1).reshape(-1, 4)
    gap = (vectors[:, None] - method.model.quantiser.codebook[None]).abs().amax(-1)
    assert (gap.min(1).values == 0).all()  # every vector is a code
    samples = method.sample(5, torch.Generator().manual_seed(0))
    assert samples.shape == (5, *shape) and samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(samples, method.decode(z))
    x = torch.rand(2, *shape)
    assert method.reconstruct(x).shape == x.shape and method.embed(x).shape == (2, method.latent_dim)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvVQVAE((1, 10, 12), config)


@requires_data("fashion-mnist")
def test_without_base_images_pretraining_is_skipped(fashion_split):
    task = dataclasses.replace(
        fashion_split.task,
        base_images=fashion_split.task.base_images[:0],
        base_labels=fashion_split.task.base_labels[:0],
    )
    method = VQVAE()
    method.fit(task, VQVAE.profiles["smoke"], 0)
    assert method.training_log["pretrain"].startswith("skipped")
    assert "pretrain" not in method.timings and "finetune" in method.timings
    for phase in ("finetune", "finetune_prior"):
        assert phase in method.training_log and method.training_log[phase]["curve"]["step"]
    assert 1 <= method.training_log["finetune"]["perplexity"] <= VQVAE.Config.codebook_size
    samples = method.sample(4, torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 28, 28) and torch.isfinite(samples).all()
