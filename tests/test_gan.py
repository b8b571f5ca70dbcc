"""The shared GAN machinery, checked against independent computations and by meaning (Reptile: test_reptile.py)."""

import pytest
import torch
import torch.nn as nn
from conftest import requires_data

from bench.sdk.method import TrainingDiverged
from methods._gan import CollapseCheck, Player, alternate, critic_wgan_gp, gradient_penalty


def test_gradient_penalty_of_a_linear_critic_is_its_slope_norm_off_one():
    # D(x) = <w, x> has gradient w everywhere, so the penalty is (||w|| - 1)^2 whatever the interpolates.
    w = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(1))
    assert penalty.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    unit = w / w.norm()
    assert gradient_penalty(
        lambda x: (x * unit).flatten(1).sum(1), real, fake, torch.Generator()
    ).item() == pytest.approx(0, abs=1e-10)


def test_wgan_critic_loss_rewards_separating_real_from_fake():
    real, fake = torch.ones(4, 1, 2, 2), -torch.ones(4, 1, 2, 2)
    separating = critic_wgan_gp(lambda x: x.flatten(1).mean(1), real, fake, torch.Generator().manual_seed(0))
    confused = critic_wgan_gp(lambda x: -x.flatten(1).mean(1), real, fake, torch.Generator().manual_seed(0))
    assert separating["wasserstein"] == pytest.approx(2.0) and confused["wasserstein"] == pytest.approx(-2.0)
    assert separating["loss"] < confused["loss"]


def _player(name, values):
    parameter = nn.Parameter(torch.zeros(()))
    return Player(name, lambda step: {"loss": parameter * 0 + values(step)}, torch.optim.SGD([parameter], lr=0.1))


def test_a_non_finite_loss_stops_training_with_the_step():
    nan_at_3 = _player("d", lambda step: torch.tensor(float("nan") if step == 3 else 1.0))
    with pytest.raises(TrainingDiverged, match="finetune: d_loss became nan at step 3"):
        alternate([nan_at_3, _player("g", lambda step: torch.tensor(0.5))], 10, phase="finetune")


def test_a_collapsed_discriminator_is_detected_and_a_balanced_one_is_not():
    def discriminator(p_real, p_fake):
        parameter = nn.Parameter(torch.zeros(()))
        return Player(
            "d",
            lambda step: {"loss": parameter * 0 + 1.0, "p_real": torch.tensor(p_real), "p_fake": torch.tensor(p_fake)},
            torch.optim.SGD([parameter], lr=0.1),
        )

    generator = _player("g", lambda step: torch.tensor(1.0))
    with pytest.raises(TrainingDiverged, match="discriminator collapse"):
        alternate([discriminator(0.9999, 0.0001), generator], 100, phase="pretrain", collapse=CollapseCheck(window=20))
    result = alternate([discriminator(0.7, 0.3), generator], 100, phase="pretrain", collapse=CollapseCheck(window=20))
    assert result["d_p_real"] == pytest.approx(0.7) and len(result["curve"]["step"]) == 100


def test_curves_average_blocks_of_steps():
    counter = iter(range(1000))
    result = alternate([_player("g", lambda step: torch.tensor(float(next(counter))))], 10, phase="x", curve_points=5)
    assert result["curve"]["step"] == [2, 4, 6, 8, 10] and result["curve"]["g_loss"] == [0.5, 2.5, 4.5, 6.5, 8.5]


@requires_data("fashion-mnist")
@pytest.mark.parametrize("architecture", ["dcgan", "resnet"])
def test_figr_networks_have_no_batch_statistics(architecture, fashion_split):
    from methods.figr import FIGR, FIGRConfig

    method = FIGR(FIGRConfig(architecture=architecture, width=8))
    method.fit(fashion_split.task, FIGR.profiles["smoke"], 0)
    for network in (method.meta_g, method.meta_d, method.generator_net, method.critic_net):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
    assert method.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)


@requires_data("fashion-mnist")
def test_figr_paper_profile_runs_algorithm_1_optimisers(fashion_split, monkeypatch):
    """Plain SGD inside (meta-training and adaptation), Adam at lr 1e-4 for Reptile's outer step; `quick` names Adam."""
    import dataclasses

    from methods.figr import FIGR, FIGRConfig

    made = []

    def spy(cls):
        class Spy(cls):
            def __init__(self, params, lr, **kwargs):
                made.append((cls.__name__, lr))
                super().__init__(params, lr=lr, **kwargs)

        return Spy

    monkeypatch.setattr(torch.optim, "SGD", spy(torch.optim.SGD))
    monkeypatch.setattr(torch.optim, "Adam", spy(torch.optim.Adam))
    paper = dataclasses.replace(FIGR.profiles["paper"], meta_iterations=2, inner_steps=1, adapt_steps=1)
    FIGR(FIGRConfig(width=8)).fit(fashion_split.task, paper, 0)
    # Two meta-optimisers (generator, critic), then per task and for the adaptation a fresh SGD pair.
    assert made[:2] == [("Adam", 1e-4), ("Adam", 1e-4)]
    assert made[2:] == [("SGD", 1e-4)] * 2 * (paper.meta_iterations + 1)
    assert FIGR.profiles["paper"].inner_optimizer == "sgd" and FIGR.profiles["quick"].inner_optimizer == "adam"


@requires_data("fashion-mnist")
def test_the_conditional_gan_draws_the_class_it_is_given(fashion_split):
    from methods.cgan import ConditionalGAN

    method = ConditionalGAN()
    method.fit(fashion_split.task, ConditionalGAN.profiles["smoke"], 0)
    z = method.sample_latent(4, torch.Generator().manual_seed(0))
    novel = method.decode(z)
    method.novel_label = 0
    assert not torch.allclose(novel, method.decode(z))
