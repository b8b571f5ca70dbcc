"""FIGR: Few-shot Image Generation with Reptile (Clouatre and Demers, 2019), as described in
"Few Shot Learning for Image Generation" (sections 2-3, Algorithms 1 and 2).

A WGAN-GP generator/critic pair (Gulrajani et al. 2017: critic loss E[D(fake)] - E[D(real)] +
10 * gradient penalty, generator loss -E[D(G(z))]) is meta-trained with Reptile over tasks; a
task is n images of one base class (paper n = 4).

Algorithm 1 (meta-training), each meta-iteration: copy Phi_d, Phi_g to W_d, W_g; sample a base
class and n of its images; K times: one critic step on W_d (WGAN-GP loss on the n images and n
generated ones), one generator step on W_g; then set the gradient of Phi to Phi - W and take an
Adam step (Reptile's outer update: `bench.sdk.reptile`). Inner optimiser: plain SGD (lr 1e-4), as
Algorithms 1 and 2 write it; meta optimiser: Adam (lr 1e-4). A profile may name another inner
optimiser (`FIGRBudget.inner_optimizer`: "adam" is WGAN-GP's Adam, betas 0 and 0.9, fresh per task),
a deviation its comment states.

Algorithm 2 (generation): copy the meta-trained weights, run the same K-step loop on the k
support images of the novel class (`adapt_steps` of them), then sample z ~ N(0, I).

Networks use layer normalisation, never batch normalisation: batch statistics do not survive the
Reptile update. The default is DCGAN-sized (it fits a CPU); `architecture="resnet"` selects the
residual generator/critic of the original FIGR (layer norm, PReLU). Images stay at the dataset's
resolution (the report resized to 32x32), in [-1, 1].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.sdk.method import Method, PretrainThenAdapt, StandardNormalLatent
from bench.sdk.reptile import MetaNetwork, copy_weights, reptile
from bench.sdk.task import FewShotTask
from bench.sdk.training import seeded_init
from methods import register
from methods._gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    LatentSampler,
    Player,
    ResNetDiscriminator,
    ResNetGenerator,
    alternate,
    critic_wgan_gp,
    to_signed,
)


@dataclass(frozen=True)
class FIGRConfig:
    architecture: str = "dcgan"  # "dcgan" (default, CPU-sized) or "resnet" (the original's residual networks)
    latent_dim: int = 100
    width: int = 64
    task_images: int = 4  # n: images per meta-training task
    meta_lr: float = 1e-4  # Adam, the outer update
    inner_lr: float = 1e-4
    penalty_weight: float = 10.0


@dataclass(frozen=True)
class FIGRBudget:
    meta_iterations: int  # outer Reptile updates (Algorithm 1)
    inner_steps: int  # K: (critic step + generator step) rounds per task
    adapt_steps: int  # K of Algorithm 2: rounds on the support set before sampling
    inner_optimizer: str = "sgd"  # of the inner loops: "sgd" (Algorithms 1-2) or "adam" (WGAN-GP's, a deviation)

    def __post_init__(self):
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"unknown inner_optimizer '{self.inner_optimizer}' (valid: {', '.join(INNER_OPTIMIZERS)})")


INNER_OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(0.0, 0.9)),
}


@register
class FIGR(StandardNormalLatent, PretrainThenAdapt, LatentSampler, Method):
    title = "FIGR: WGAN-GP meta-trained with Reptile, adapted on the support set"
    reference = "Clouatre and Demers, FIGR: Few-shot Image Generation with Reptile, 2019; Nichol et al., Reptile, 2018"
    version = "2"
    Config = FIGRConfig
    Budget = FIGRBudget
    profiles = {
        "smoke": FIGRBudget(meta_iterations=5, inner_steps=2, adapt_steps=5),
        # About 0.6 s per meta-iteration and 70 ms per adaptation round at one thread: about 2.5 minutes.
        # Measured at this scale (4-shot ankle boots, class consistency of 500 samples): 600 meta-iterations
        # then 300 / 1,000 / 1,500 adaptation rounds gave 0.04 / 0.51 / 0.96; without meta-training, 300 / 1,500
        # rounds gave 0.42 / 1.00. At a CPU budget, adaptation on the support set does the work (docs/methods.md).
        # Deviation: the inner loops use WGAN-GP's Adam, not Algorithm 1's plain SGD. Measured at this budget
        # (4-shot ankle boots, 1,000 samples): SGD (lr 1e-4) gave FID 6,955 and class consistency 0.00 after
        # 1,500 adaptation rounds (8,931 and 0.00 after Algorithm 2's 10), Adam gave 873 and 1.00.
        "quick": FIGRBudget(meta_iterations=60, inner_steps=10, adapt_steps=1500, inner_optimizer="adam"),
        # Algorithms 1 and 2 (plain SGD inside, K = 10 in generation) with 2,500 meta-iterations (about 0.53 s
        # each at one thread: 22 minutes) (docs/methods.md#standard).
        "standard": FIGRBudget(meta_iterations=2500, inner_steps=10, adapt_steps=10, inner_optimizer="sgd"),
        # Algorithms 1 and 2 as the report gives them: 100,000 meta-iterations (a GPU budget), K = 10 plain SGD
        # steps inside, in training and in generation.
        "paper": FIGRBudget(meta_iterations=100_000, inner_steps=10, adapt_steps=10, inner_optimizer="sgd"),
    }
    capabilities = frozenset({"latent", "latent_prior", "transfer"})
    needs_base_classes = True  # without meta-training, a few SGD steps on a random network

    def build(self, task: FewShotTask) -> tuple[nn.Module, nn.Module]:
        cfg = self.config
        if cfg.architecture == "dcgan":
            return (
                DCGANGenerator(cfg.latent_dim, task.image_shape, cfg.width, norm="layer"),
                DCGANDiscriminator(task.image_shape, cfg.width, norm="layer"),
            )
        if cfg.architecture == "resnet":
            return ResNetGenerator(cfg.latent_dim, task.image_shape, cfg.width), ResNetDiscriminator(
                task.image_shape, cfg.width
            )
        raise ValueError(f"unknown FIGR architecture '{cfg.architecture}' (valid: dcgan, resnet)")

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # -- Algorithm 1 --------------------------------------------------------------------------
    def pretrain_on_base(self, task: FewShotTask, budget: FIGRBudget, seed: int, generator: torch.Generator) -> None:
        cfg = self.config
        with seeded_init(seed):
            self.meta_g, self.meta_d = (m.to(self.device) for m in self.build(task))
        self.generator_net, self.critic_net = copy.deepcopy(self.meta_g), copy.deepcopy(self.meta_d)
        classes = task.base_labels.unique()
        members = {int(c): torch.nonzero(task.base_labels == c).flatten() for c in classes}

        def inner_loop(iteration: int) -> dict[str, float]:
            """A task: n images of one base class; K rounds of WGAN-GP on the copies W (Algorithm 1, lines 3-15)."""
            character = int(classes[torch.randint(len(classes), (1,), generator=generator)])
            pool = members[character]
            chosen = pool[torch.randperm(len(pool), generator=generator)[: cfg.task_images]]
            terms = self._train_copies(
                to_signed(task.base_images[chosen].to(self.device)),
                budget.inner_steps,
                budget.inner_optimizer,
                generator,
            )
            del terms["curve"]
            return terms

        networks = [
            MetaNetwork(meta, fast, torch.optim.Adam(meta.parameters(), lr=cfg.meta_lr), name)
            for meta, fast, name in ((self.meta_g, self.generator_net, "g"), (self.meta_d, self.critic_net, "d"))
        ]
        with self.phase("meta_train"):
            self.training_log["meta_train"] = reptile(
                networks, inner_loop, budget.meta_iterations, reporter=self.reporter
            )

    def _train_copies(
        self, images: torch.Tensor, steps: int, optimizer: str, generator: torch.Generator, curve_points: int = 1
    ) -> dict:
        """K rounds of WGAN-GP on the copies W_g, W_d, each with a fresh inner optimiser (Algorithms 1 and 2)."""
        cfg = self.config
        self.generator_net.train()
        self.critic_net.train()
        g_opt = INNER_OPTIMIZERS[optimizer](self.generator_net.parameters(), cfg.inner_lr)
        d_opt = INNER_OPTIMIZERS[optimizer](self.critic_net.parameters(), cfg.inner_lr)
        n = len(images)

        def critic(x: torch.Tensor) -> torch.Tensor:
            return self.critic_net(x)[0]

        def d_loss(step: int) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                fake = self.generator_net(self.sample_latent(n, generator).to(self.device))
            return critic_wgan_gp(critic, images, fake, generator, cfg.penalty_weight)

        def g_loss(step: int) -> dict[str, torch.Tensor]:
            return {"loss": -critic(self.generator_net(self.sample_latent(n, generator).to(self.device))).mean()}

        return alternate(
            [Player("d", d_loss, d_opt), Player("g", g_loss, g_opt)],
            steps,
            phase="inner loop",
            curve_points=curve_points,
        )

    # -- Algorithm 2 --------------------------------------------------------------------------
    def adapt_to_support(self, task: FewShotTask, budget: FIGRBudget, generator: torch.Generator) -> None:
        """Copy the meta-trained weights and run the inner loop on the k support images."""
        copy_weights(self.meta_g, self.generator_net)
        copy_weights(self.meta_d, self.critic_net)
        support = to_signed(task.support.to(self.device))
        with self.phase("adapt"):
            self.training_log["adapt"] = self._train_copies(
                support, budget.adapt_steps, budget.inner_optimizer, generator, curve_points=200
            )
        self.generator_net.eval()
