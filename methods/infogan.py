"""InfoGAN with the transfer-learning protocol of "Few Shot Learning for Image Generation".

Chen, Duan, Houthooft, Schulman, Sutskever and Abbeel, InfoGAN: Interpretable Representation
Learning by Information Maximizing Generative Adversarial Nets, NeurIPS 2016. The generator's
input is noise z ~ N(0, I) with a latent code c: one categorical code c_cat ~ Cat(K) (one-hot, K =
10) and continuous codes c_cont ~ U(-1, 1) (2 of them), as in the paper's MNIST model. An
auxiliary head Q(c | x) shares the discriminator's trunk and predicts the code of a generated
image: categorical logits and the means of a unit-variance Gaussian for the continuous codes.
The mutual-information lower bound L_I = E[log Q(c | G(z, c))] + H(c) is maximised by the
generator and Q: both minimise

    info = CE(Q_cat, c_cat) + lambda_cont * 0.5 * ||Q_mean - c_cont||^2      (H(c) is a constant)

weighted by lambda (paper: 1 for discrete codes; the continuous term scaled down, 0.1 here). The
discriminator minimises its binary cross-entropy plus lambda * info (Q's parameters train with
it); the generator the non-saturating loss plus lambda * info. Transfer protocol as `dcgan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.ais import LatentPrior, uniform_from_normal
from bench.sdk.task import FewShotTask
from methods import register
from methods._gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    GANConfig,
    TransferGAN,
    discriminator_bce,
    generator_nonsaturating,
)


@dataclass(frozen=True)
class InfoGANConfig(GANConfig):
    latent_dim: int = 62  # noise dimensions (the paper's MNIST model)
    categories: int = 10  # values of the categorical code
    continuous_codes: int = 2
    info_weight: float = 1.0  # lambda
    continuous_weight: float = 0.1  # lambda_cont, relative to the categorical term


@register
class InfoGAN(TransferGAN):
    title = "InfoGAN (categorical + continuous codes, Q head; pretrain on base classes, fine-tune on augmented support)"
    reference = "Chen et al., InfoGAN, NeurIPS 2016; transfer protocol of Batra et al."
    version = "1"
    Config = InfoGANConfig

    def build(self, task: FewShotTask) -> tuple[nn.Module, nn.Module]:
        cfg = self.config
        return (
            DCGANGenerator(self.latent_dim, task.image_shape, cfg.width),
            DCGANDiscriminator(task.image_shape, cfg.width, aux_dim=cfg.categories + cfg.continuous_codes),
        )

    # The latent code is [z, one-hot c_cat, c_cont]: the generator's whole input.
    @property
    def latent_dim(self) -> int:
        cfg = self.config
        return cfg.latent_dim + cfg.categories + cfg.continuous_codes

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        noise = torch.randn(n, cfg.latent_dim, generator=generator)
        category = torch.randint(cfg.categories, (n,), generator=generator)
        continuous = torch.rand(n, cfg.continuous_codes, generator=generator) * 2 - 1
        return torch.cat([noise, F.one_hot(category, cfg.categories).float(), continuous], 1)

    def latent_prior(self) -> LatentPrior:
        """`sample_latent`'s distribution for AIS: one component per category (equal weights), the noise and the
        uniform codes from standard normal noise (a code is 2 Phi(u) - 1)."""
        cfg = self.config

        def to_latent(u: torch.Tensor, category: int) -> torch.Tensor:
            one_hot = torch.zeros(len(u), cfg.categories, dtype=u.dtype)
            one_hot[:, category] = 1
            return torch.cat([u[:, : cfg.latent_dim], one_hot, uniform_from_normal(u[:, cfg.latent_dim :])], 1)

        return LatentPrior(
            cfg.latent_dim + cfg.continuous_codes,
            torch.full((cfg.categories,), -math.log(cfg.categories), dtype=torch.float64),
            to_latent,
            f"N(0, I_{cfg.latent_dim}) noise x uniform category of {cfg.categories} x U(-1, 1)^{cfg.continuous_codes} codes",
        )

    def _information(self, codes: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Negative mutual-information lower bound (up to the constant H(c)) of the codes given Q's outputs."""
        cfg = self.config
        start = cfg.latent_dim
        category = codes[:, start : start + cfg.categories].argmax(1)
        continuous = codes[:, start + cfg.categories :]
        categorical_term = F.cross_entropy(q[:, : cfg.categories], category)
        continuous_term = 0.5 * (q[:, cfg.categories :] - continuous).pow(2).sum(1).mean()
        return categorical_term + cfg.continuous_weight * continuous_term

    def discriminator_loss(self, real, labels, generator):
        codes = self.sample_latent(len(real), generator).to(self.device)
        with torch.no_grad():
            fake = self.generate(codes)
        real_logits, _ = self.discriminator_net(real)
        fake_logits, q = self.discriminator_net(fake)
        terms = discriminator_bce(real_logits, fake_logits)
        info = self._information(codes, q)
        return {**terms, "loss": terms["loss"] + self.config.info_weight * info, "info": info.detach()}

    def generator_loss(self, n, labels, generator):
        codes = self.sample_latent(n, generator).to(self.device)
        fake_logits, q = self.discriminator_net(self.generate(codes))
        info = self._information(codes, q)
        return {"loss": generator_nonsaturating(fake_logits) + self.config.info_weight * info, "info": info.detach()}
