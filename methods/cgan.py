"""Conditional DCGAN with the transfer-learning protocol of "Few Shot Learning for Image Generation".

Mirza and Osindero, Conditional Generative Adversarial Nets, 2014, on the DCGAN networks: the
class label, one-hot over every class of the dataset (base classes and the novel one), is
concatenated to the generator's noise z and to the discriminator's dense layer input, so the
discriminator judges (image, label) pairs. Pretraining uses the base images with their labels;
fine-tuning uses the augmented support pool with the novel class's label; samples are drawn
with the novel class's label. Losses and optimiser as `dcgan`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.method import StandardNormalLatent
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


@register
class ConditionalGAN(StandardNormalLatent, TransferGAN):
    title = "Conditional DCGAN (one-hot labels; pretrain on base classes, fine-tune with the novel label)"
    reference = "Mirza and Osindero, Conditional Generative Adversarial Nets, 2014; transfer protocol of Batra et al."
    version = "1"
    Config = GANConfig

    def build(self, task: FewShotTask) -> tuple[nn.Module, nn.Module]:
        cfg = self.config
        self.num_classes = task.num_classes
        return (
            DCGANGenerator(cfg.latent_dim + task.num_classes, task.image_shape, cfg.width),
            DCGANDiscriminator(task.image_shape, cfg.width, condition_dim=task.num_classes),
        )

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.num_classes).float()

    def _fake(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(len(labels), self.config.latent_dim, generator=generator).to(self.device)
        return self.generator_net(torch.cat([noise, self._one_hot(labels)], 1))

    def discriminator_loss(self, real, labels, generator):
        with torch.no_grad():
            fake = self._fake(labels, generator)
        condition = self._one_hot(labels)
        return discriminator_bce(self.discriminator_net(real, condition)[0], self.discriminator_net(fake, condition)[0])

    def generator_loss(self, n, labels, generator):
        fake = self._fake(labels, generator)
        return {"loss": generator_nonsaturating(self.discriminator_net(fake, self._one_hot(labels))[0])}

    # The latent code is the noise; the label is fixed to the novel class.
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        labels = torch.full((len(z),), self.novel_label, dtype=torch.int64, device=z.device)
        return self.generator_net(torch.cat([z, self._one_hot(labels)], 1))
