"""CADA-VQ-VAE and the class semantics: loss terms against independent computations, properties of the
quantiser, the sampling distribution (the semantic posterior, or the support mixture of the ablation) and
the episodes, and the errors a user meets."""

import copy
import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.data.datasets import DATASETS, ImageDataset
from bench.sdk.likelihood import quantise
from bench.sdk.semantics import class_embeddings, embedding_card
from bench.sdk.task import FewShotTask, SplitInfo
from methods import METHODS
from methods.cadavqvae import (
    CADAVQVAE,
    CADAVQVAEBudget,
    CADAVQVAEConfig,
    SemanticEncoderVQVAE,
    gaussian_w2,
    mixture_log_prob,
    mmd,
    prototypical_loss,
)

DESCRIBED = ("fashion-mnist", "mnist", "cifar10")
TINY = CADAVQVAEBudget(episodes=2, adapt_steps=2, pool_size=8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- distribution alignment ---------------------------------------------------------------------
def test_mmd_matches_a_brute_force_double_sum():
    x, y = torch.randn(5, 3, generator=_gen(0)), torch.randn(4, 3, generator=_gen(1)) + 0.5

    def k(a, b):  # one bandwidth b = 1: exp(-|a - b|^2 / (2 d))
        return math.exp(-sum((float(p) - float(q)) ** 2 for p, q in zip(a, b)) / (2 * 3))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    assert mmd(x, y, bandwidths=(1.0,)).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-5)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_mean_shift():
    d = 8
    x, y = torch.randn(400, d, generator=_gen(0)), torch.randn(400, d, generator=_gen(1))
    same = mmd(x, y).item()
    shifted = [mmd(x, y + shift / math.sqrt(d)).item() for shift in (0.5, 1.0, 2.0, 4.0)]
    assert abs(same) < 0.005
    assert shifted == sorted(shifted) and shifted[1] > 10 * abs(same)


def test_w2_of_diagonal_gaussians_equals_the_closed_form():
    # Hand example: N((0, 0), diag(1, 1)) and N((3, 4), diag(4, 1)): |mu|^2 = 25, |sigma1 - sigma2|^2 = 1.
    w2 = gaussian_w2(
        torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.tensor([[math.log(4.0), 0.0]])
    )
    assert w2.item() == pytest.approx(math.sqrt(26), rel=1e-6)
    # Against the general Gaussian formula |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2).
    g = _gen(3)
    m1, m2, lv1, lv2 = (torch.randn(1, 5, generator=g, dtype=torch.float64) for _ in range(4))
    s1, s2 = np.diag(lv1.exp()[0].numpy()), np.diag(lv2.exp()[0].numpy())
    root2 = scipy.linalg.sqrtm(s2)
    general = float(((m1 - m2) ** 2).sum()) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(root2 @ s1 @ root2)).real
    assert gaussian_w2(m1, lv1, m2, lv2).item() == pytest.approx(math.sqrt(general), rel=1e-6)


# -- vector quantiser -----------------------------------------------------------------------------
def test_quantiser_picks_the_nearest_code_per_chunk_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    encoder = SemanticEncoderVQVAE(semantic_dim=5, latent_size=12, num_embeddings=7, embedding_dim=3)
    quantiser = encoder.quantiser
    with torch.no_grad():
        quantiser.codebook.copy_(torch.randn(7, 3, generator=_gen(1)))
    z_e = torch.randn(4, 12, generator=_gen(2), requires_grad=True)
    encoder.to_latent.forward = lambda h: z_e  # the semantic encoder's latent before quantisation
    out = encoder(torch.zeros(4, 5)).quantised
    codebook = quantiser.codebook.detach()
    for row in range(4):
        for chunk in range(4):
            piece = z_e[row, 3 * chunk : 3 * chunk + 3].detach()
            nearest = min(range(7), key=lambda c: float(((piece - codebook[c]) ** 2).sum()))
            assert out.codes[row, chunk].item() == nearest
            torch.testing.assert_close(out.z_q[row, 3 * chunk : 3 * chunk + 3].detach(), codebook[nearest])
    weights = torch.randn(4, 12, generator=_gen(3))
    (out.z_q * weights).sum().backward()
    torch.testing.assert_close(z_e.grad, weights)  # straight through: dz_q/dz_e = identity
    # The codebook loss moves only the codes, the commitment loss only the encoder's output.
    z_e.grad = None
    out = encoder(torch.zeros(4, 5)).quantised
    out.codebook_loss.backward()
    assert z_e.grad is None and quantiser.codebook.grad.abs().sum() > 0
    quantiser.codebook.grad = None
    out = encoder(torch.zeros(4, 5)).quantised
    out.commitment_loss.backward()
    assert quantiser.codebook.grad is None and z_e.grad.abs().sum() > 0


# -- contrastive ------------------------------------------------------------------------------------
def test_prototypical_loss_is_a_softmax_over_negative_squared_distances():
    prototypes = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    query = torch.tensor([[1.0, 0.0]])
    # Distances^2 1 and 4: p(class 0) = e^-1 / (e^-1 + e^-4).
    expected = -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-4)))
    assert prototypical_loss(query, torch.tensor([0]), prototypes).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_is_lower_for_separated_classes_than_for_mixed_ones():
    g = _gen(4)
    labels = torch.arange(3).repeat_interleave(20)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    separated = centres[labels] + 0.5 * torch.randn(60, 2, generator=g)
    mixed = 3 * torch.randn(60, 2, generator=g)

    def loss(points):
        prototypes = torch.stack([points[labels == c][:5].mean(0) for c in range(3)])
        return prototypical_loss(points, labels, prototypes).item()

    assert loss(separated) < 0.1 < math.log(3) * 0.8 < loss(mixed)


# -- sampling mixture -------------------------------------------------------------------------------
def test_mixture_density_matches_torch_distributions():
    g = _gen(5)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    means, logvars = (
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )
    z = torch.randn(10, 4, generator=g, dtype=torch.float64)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=weights),
        torch.distributions.Independent(torch.distributions.Normal(means, (0.5 * logvars).exp()), 1),
    ).log_prob(z)
    torch.testing.assert_close(mixture_log_prob(z, weights, means, logvars), reference)


def test_samples_are_drawn_from_the_distribution_whose_density_is_the_likelihood_prior():
    method = CADAVQVAE(CADAVQVAEConfig(latent_size=2))
    weights = torch.tensor([0.1, 0.3, 0.6])
    method.mixture = {
        "weights": weights,
        "means": torch.tensor([[-20.0, 0.0], [0.0, 20.0], [20.0, 0.0]]),
        "logvars": torch.zeros(3, 2),
    }
    z = method.sample_latent(20_000, _gen(6))
    nearest = torch.cdist(z, method.mixture["means"]).argmin(1)
    torch.testing.assert_close(nearest.bincount(minlength=3) / 20_000, weights, atol=0.015, rtol=0)
    # Each component's spread is its posterior's: unit variance here.
    assert z[nearest == 2].std(0).sub(1).abs().max() < 0.05
    assert method.log_prior(z[:5].double()).dtype == torch.float64


# -- class semantics --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DESCRIBED)
def test_every_class_has_a_description_and_distinct_unit_embeddings(name):
    dataset = DATASETS.get(name)
    assert len(dataset.class_descriptions) == dataset.num_classes
    assert all(len(text.split()) >= 6 for text in dataset.class_descriptions)
    vectors = class_embeddings(dataset.class_descriptions)
    assert vectors.shape == (dataset.num_classes, 256) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(dataset.num_classes))
    cosine = vectors @ vectors.T - 2 * torch.eye(dataset.num_classes)
    assert cosine.max() < 0.9  # no two classes embed (nearly) alike
    card = embedding_card(dataset.class_descriptions)
    assert card["dim"] == 256 and card["package"] == "wordllama 0.4.0.post1"
    assert (
        card["descriptions_sha256"] == hashlib.sha256(json.dumps(list(dataset.class_descriptions)).encode()).hexdigest()
    )


def test_embeddings_carry_meaning_the_ankle_boot_is_nearest_to_the_other_shoes():
    vectors = class_embeddings(DATASETS.get("fashion-mnist").class_descriptions)
    names = DATASETS.get("fashion-mnist").class_names
    similarity = vectors @ vectors[names.index("Ankle boot")]
    similarity[names.index("Ankle boot")] = -1
    assert names[int(similarity.argmax())] in ("Sneaker", "Sandal")


def test_no_descriptions_give_a_clear_error():
    with pytest.raises(ValueError, match="no class descriptions were given"):
        class_embeddings(DATASETS.get("omniglot").class_descriptions)


def test_descriptions_must_be_one_per_class():
    with pytest.raises(ValueError, match="1 class descriptions for 2 classes"):
        ImageDataset(
            "toy", "Toy", ("a", "b"), (1, 4, 4), (), "none", "none", 1, False, class_descriptions=("only one",)
        )


# -- episodes and the transfer protocol on a synthetic task -----------------------------------------
def _task(dataset: str = "fashion-mnist", base: bool = True, novel: int = 9, shape: tuple = (1, 8, 8)) -> FewShotTask:
    """Images whose pixel value encodes their class (label / 10), twelve of each base class."""
    classes = [c for c in range(10) if c != novel] if base else []
    labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(12)
    images = (labels.float() / 10).view(-1, 1, 1, 1).expand(-1, *shape).clone()
    info = SplitInfo(
        dataset=dataset,
        protocol="novel-class",
        version=1,
        split_id="synthetic",
        novel_class=novel,
        novel_class_name=str(novel),
        shots=3,
        seed=0,
        support_indices=(0, 1, 2),
        n_base=len(labels),
        n_reference=0,
        sha256="",
    )
    return FewShotTask(
        base_images=images,
        base_labels=labels,
        support=torch.full((3, *shape), novel / 10),
        image_shape=shape,
        num_classes=10,
        novel_class=novel,
        allows_hflip=False,
        info=info,
        class_descriptions=tuple(DATASETS.get(dataset).class_descriptions or ()),
    )


def test_episodes_contain_only_base_classes_with_support_then_query_images():
    task = _task(novel=4)
    method = CADAVQVAE()
    cfg = method.config
    members = {int(c): torch.nonzero(task.base_labels == c).flatten() for c in task.base_labels.unique()}
    seen = set()
    generator = _gen(7)
    for _ in range(50):
        images, labels, support, chosen = method.episode(task, members, generator)
        per_class = cfg.support_per_class + cfg.query_per_class
        assert images.shape[0] == cfg.n_way * per_class and len(set(chosen.tolist())) == cfg.n_way
        assert 4 not in chosen.tolist()
        # Every image is of the class its episode label names (its pixel value says so).
        torch.testing.assert_close(images[:, 0, 0, 0], chosen[labels].float() / 10)
        assert support.view(cfg.n_way, per_class).sum(1).tolist() == [cfg.support_per_class] * cfg.n_way
        seen.update(chosen.tolist())
    assert seen == set(range(10)) - {4}


def test_pretraining_never_sees_the_novel_class_description(monkeypatch):
    import methods.cadavqvae as module

    task = _task()
    trained = []
    for novel_row in (torch.zeros(256), torch.ones(256) / 16):

        def table(descriptions, row=novel_row):
            vectors = class_embeddings(descriptions).clone()
            vectors[9] = row
            return vectors

        monkeypatch.setattr(module, "class_embeddings", table)
        method = CADAVQVAE()
        method.pretrain(task, TINY, seed=0)
        trained.append({key: value.clone() for key, value in method.model.state_dict().items()})
        method.adapt(task, TINY, seed=0)
        trained.append(method.sample(4, _gen(0)))
    assert all(torch.equal(trained[0][key], trained[2][key]) for key in trained[0])
    assert not torch.equal(trained[1], trained[3])  # adaptation does use it


def test_meta_learning_switch_changes_the_training_and_both_sample_valid_images():
    task = _task()
    samples = []
    for meta in (True, False):
        method = CADAVQVAE(dataclasses.replace(CADAVQVAEConfig(), meta_learning=meta))
        method.fit(task, TINY, seed=0)
        assert method.training_log["meta_train"]["meta_learning"] is meta
        assert ("reptile_distance" in method.training_log["meta_train"]) is meta
        assert method.training_log["semantics"]["dim"] == 256
        samples.append(method.sample(5, _gen(1)))
        assert samples[-1].shape == (5, 1, 8, 8) and 0 <= samples[-1].min() and samples[-1].max() <= 1
    assert not torch.equal(*samples)


def test_colour_images_of_other_sizes_and_every_capability():
    task = _task(dataset="cifar10", shape=(3, 8, 12))
    method = CADAVQVAE()
    method.fit(task, TINY, seed=0)
    samples = method.sample(3, _gen(0))
    assert samples.shape == (3, 3, 8, 12)
    assert method.reconstruct(task.support).shape == task.support.shape
    assert method.embed(task.support).shape == (3, method.latent_dim)
    log_px = method.log_likelihood(task.support, num_samples=4, generator=_gen(1))
    assert log_px.dtype == torch.float64 and log_px.shape == (3,) and torch.isfinite(log_px).all()
    # Colour images are scored at their 8-bit values: any [0, 1] input with the same values scores the same.
    within_level = (
        quantise(task.support) + 0.4 / 255 * (torch.rand(task.support.shape, generator=_gen(2)) - 0.5)
    ).clamp(0, 1)
    torch.testing.assert_close(method.log_likelihood(within_level, num_samples=4, generator=_gen(1)), log_px)


# -- sampling through the generative path -----------------------------------------------------------
def test_samples_come_from_the_semantic_posterior_of_the_novel_class_description():
    task = _task()
    method = CADAVQVAE()
    method.fit(task, TINY, seed=0)
    # q(z|s) computed apart from the method's sampling code: the description's embedding through the semantic encoder.
    novel = class_embeddings(task.class_descriptions)[task.novel_class][None]
    with torch.no_grad():
        posterior = method.model.semantic_encoder(novel)
    mean, std = posterior.mean[0], torch.exp(0.5 * posterior.logvar[0])
    z = method.sample_latent(20_000, _gen(8))
    # Within 5 standard errors in every one of the 32 dimensions.
    torch.testing.assert_close(z.mean(0), mean, atol=float(5 * std.max() / math.sqrt(20_000)), rtol=0)
    torch.testing.assert_close(z.std(0) / std, torch.ones_like(std), atol=0.05, rtol=0)
    # The likelihood's prior is that same Gaussian's density.
    gaussian = torch.distributions.Independent(torch.distributions.Normal(mean.double(), std.double()), 1)
    torch.testing.assert_close(method.log_prior(z[:50].double()), gaussian.log_prob(z[:50].double()))
    assert "semantic posterior" in method.likelihood_description


@pytest.mark.parametrize("sampling", ["semantic", "support-mixture"])
def test_with_the_model_fixed_only_the_support_mixture_depends_on_which_support_images_are_given(sampling):
    """The copying of version 1 by construction: its sampling distribution is built from the support images'
    posteriors. Adaptation frozen (learning rate 0), one model and one description, two support sets: the
    generative path samples the same images from both, the support mixture does not."""
    config = dataclasses.replace(CADAVQVAEConfig(), adapt_lr=0.0, sampling=sampling)
    base = _task()
    other = dataclasses.replace(base, support=torch.rand(base.support.shape, generator=_gen(9)))
    pretrained = CADAVQVAE(config)
    pretrained.pretrain(base, TINY, seed=0)
    samples = []
    for task in (base, other):
        method = copy.deepcopy(pretrained)
        method.adapt(task, TINY, seed=0)
        samples.append(method.sample(16, _gen(10)))
    assert torch.equal(*samples) is (sampling == "semantic")


def test_an_unknown_sampling_is_refused_before_adaptation():
    method = CADAVQVAE(dataclasses.replace(CADAVQVAEConfig(), sampling="support"))
    method.pretrain(_task(), TINY, seed=0)
    with pytest.raises(ValueError, match="unknown sampling 'support' \\(valid: semantic, support-mixture\\)"):
        method.adapt(_task(), TINY, seed=0)


# -- the slides' meta-training regime: a few images per base class ----------------------------------
def test_meta_training_draws_its_episodes_from_a_seeded_subset_of_each_base_class(monkeypatch):
    assert CADAVQVAE.profiles["paper"].base_images_per_class == 30  # the slides' regime
    assert CADAVQVAE.profiles["quick"].base_images_per_class is None
    task = _task()  # twelve images of each of nine base classes
    subsets = []
    episode = CADAVQVAE.episode

    def recording(self, task, members, generator):
        subsets[-1].append({c: sorted(pool.tolist()) for c, pool in members.items()})
        return episode(self, task, members, generator)

    monkeypatch.setattr(CADAVQVAE, "episode", recording)
    budget = dataclasses.replace(TINY, base_images_per_class=10)
    for seed in (0, 0, 1):
        subsets.append([])
        method = CADAVQVAE()
        method.pretrain(task, budget, seed=seed)
        assert method.training_log["meta_train"]["base_images"] == 9 * 10
    first = subsets[0][0]
    assert all(drawn == first for drawn in subsets[0] + subsets[1])  # one subset for the whole run, from the seed
    assert subsets[2][0] != first
    for c, indices in first.items():
        assert len(set(indices)) == 10 and (task.base_labels[indices] == c).all()
    with pytest.raises(ValueError, match=r"base_images_per_class \(9\) is below the 10 images an episode draws"):
        CADAVQVAE().pretrain(task, dataclasses.replace(TINY, base_images_per_class=9), seed=0)


def test_the_registered_ablation_is_cadavqvae_with_standard_training_only():
    plain, meta = METHODS.get("cadavqvae-plain")(), METHODS.get("cadavqvae")()
    assert plain.config.meta_learning is False and meta.config.meta_learning is True
    assert {**dataclasses.asdict(plain.config), "meta_learning": True} == dataclasses.asdict(meta.config)
    assert plain.profiles == meta.profiles and plain.profiles["paper"].base_images_per_class == 30
