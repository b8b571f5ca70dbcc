"""Smoke tests run for every registered method: a new method file is tested automatically."""

import dataclasses

import pytest
import torch
from conftest import requires_data

from methods import METHODS

pytestmark = requires_data("fashion-mnist")


def _fit(name, split, seed=0):
    cls = METHODS.get(name)
    method = cls()
    method.fit(split.task_for(cls), cls.profiles["smoke"], seed)
    return method


@pytest.mark.parametrize("name", METHODS.names())
def test_fit_then_sample_gives_images_in_range(name, fashion_split):
    method = _fit(name, fashion_split)
    samples = method.sample(13, torch.Generator().manual_seed(0))
    assert samples.shape == (13, 1, 28, 28) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1
    assert method.timings and all(seconds >= 0 for seconds in method.timings.values())


@pytest.mark.parametrize("name", METHODS.names())
def test_same_seed_same_samples_bit_for_bit(name, fashion_split):
    a = _fit(name, fashion_split).sample(8, torch.Generator().manual_seed(5))
    b = _fit(name, fashion_split).sample(8, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    if not METHODS.get(name).is_reference:  # reference rows do not train: the seed acts through the support draw
        c = _fit(name, fashion_split, seed=1).sample(8, torch.Generator().manual_seed(5))
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", METHODS.names())
def test_declared_capabilities_work(name, fashion_split):
    method = _fit(name, fashion_split)
    x = fashion_split.task.support
    if method.has("latent"):
        z = method.sample_latent(6, torch.Generator().manual_seed(0))
        assert z.shape == (6, method.latent_dim)
        decoded = method.decode(z)
        assert decoded.shape == (6, 1, 28, 28)
        # Samples are decode(sample_latent(...)) with the same generator state.
        assert torch.allclose(method.sample(6, torch.Generator().manual_seed(0)), decoded)
    if method.has("latent_prior"):  # the prior AIS anneals from is the distribution sample_latent draws
        n, g = 4000, torch.Generator().manual_seed(1)
        prior = method.latent_prior()
        component = torch.multinomial(prior.log_weights.exp(), n, replacement=True, generator=g)
        u = torch.randn(n, prior.noise_dim, generator=g)
        z_prior = torch.cat([prior.to_latent(u[component == c], c) for c in range(len(prior.log_weights))])
        z_sampled = method.sample_latent(n, torch.Generator().manual_seed(2))
        assert z_prior.shape == z_sampled.shape
        # Moments per dimension agree within sampling error (6 standard errors of a difference of two means).
        spread = z_sampled.std(0).clamp_min(1e-3)
        assert ((z_prior.mean(0) - z_sampled.mean(0)).abs() < 6 * spread * (2 / n) ** 0.5 + 1e-6).all()
        assert ((z_prior.std(0) - z_sampled.std(0)).abs() < 0.1 * spread + 1e-6).all()
    if method.has("reconstruct"):
        assert method.reconstruct(x).shape == x.shape
    if method.has("embed"):
        assert method.embed(x).shape[0] == x.shape[0]
    if method.has("log_likelihood"):
        ll = method.log_likelihood(x)
        assert ll.shape == (x.shape[0],) and torch.isfinite(ll).all()


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).capabilities & {"transfer", "latent"}])
def test_transfer_and_latent_contracts(name, fashion_split):
    import copy

    cls = METHODS.get(name)
    fitted = _fit(name, fashion_split)
    if "transfer" in cls.capabilities:  # pretrain once, adapt a copy: the same model as `fit`
        pretrained = cls()
        pretrained.pretrain(fashion_split.task, cls.profiles["smoke"], 0)
        adapted = copy.deepcopy(pretrained)
        adapted.adapt(fashion_split.task, cls.profiles["smoke"], 0)
        assert torch.equal(
            adapted.sample(8, torch.Generator().manual_seed(2)), fitted.sample(8, torch.Generator().manual_seed(2))
        )
    if "latent" in cls.capabilities:  # backtracking optimises latents through decode
        z = fitted.sample_latent(4, torch.Generator().manual_seed(0)).requires_grad_(True)
        fitted.decode(z).sum().backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


def _without_base(task):
    return dataclasses.replace(task, base_images=task.base_images[:0], base_labels=task.base_labels[:0])


# The methods whose algorithm is their base-class phase, by the papers (meta-training, pretraining, conversion
# between images of one base class): written out here so that a method losing its declaration fails this file.
BUILT_ON_BASE_CLASSES = {
    "figr",
    "imle-pretrained",
    "adaimle-pretrained",
    "rsimle-pretrained",
    "cadavqvae",
    "cadavqvae-plain",
    "vce",
    "vce-vae",
    "vce-sigma0",
}


def test_the_methods_built_on_base_classes_declare_it():
    assert {name for name, cls in METHODS.items() if cls.needs_base_classes} == BUILT_ON_BASE_CLASSES


@pytest.mark.parametrize("name", sorted(BUILT_ON_BASE_CLASSES))
def test_methods_built_on_base_classes_refuse_a_task_without_them(name, fashion_split):
    """The unconditional protocol (a folder) has no base set: FIGR without meta-training, or a -pretrained entry
    without pretraining, would be another method under this one's name; the run fails with the reason, before any
    network is built."""
    cls = METHODS.get(name)
    method = cls()
    with pytest.raises(
        ValueError, match=f"{name} on fashion-mnist: trains on base classes, which this data does not have"
    ):
        method.fit(_without_base(fashion_split.task_for(cls)), cls.profiles["smoke"], 0)
    assert not method.timings and not method.training_log


@pytest.mark.parametrize("name", ["cadavqvae", "cadavqvae-plain"])
def test_methods_conditioned_on_class_descriptions_refuse_a_dataset_without_them(name, fashion_split):
    cls = METHODS.get(name)
    assert cls.needs_class_descriptions
    task = dataclasses.replace(fashion_split.task_for(cls), class_descriptions=())
    with pytest.raises(
        ValueError, match=f"{name} on fashion-mnist: conditions on class descriptions, which this data does not have"
    ):
        cls().fit(task, cls.profiles["smoke"], 0)


def test_only_a_transfer_method_can_need_base_classes():
    """`pretrain` is where the declaration is checked: a method without it would never be refused."""
    from methods.imle import IMLE

    class Plain(IMLE):
        capabilities = frozenset({"latent"})
        needs_base_classes = True

    with pytest.raises(TypeError, match="needs_base_classes"):
        Plain.validate_definition("plain")


def test_a_plain_generator_trains_from_scratch_without_base_classes(fashion_split):
    cls = METHODS.get("imle")
    method = cls()
    method.fit(_without_base(fashion_split.task_for(cls)), cls.profiles["smoke"], 0)
    assert method.sample(4, torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)
