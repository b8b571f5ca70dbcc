"""DCGAN with the transfer-learning protocol of "Few Shot Learning for Image Generation".

Radford, Metz and Chintala, Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks, ICLR 2016. Generator: z ~ N(0, I) (100-d) -> linear -> two
stride-2 transposed convolutions with batch norm and ReLU -> tanh. Discriminator: two stride-2
convolutions with leaky ReLU (batch norm on the second) -> dense -> real/fake logit. Losses: the
discriminator's binary cross-entropy and the non-saturating generator loss -log D(G(z)); Adam
(lr 2e-4, beta1 0.5).

Few-shot protocol (`methods/_gan.py`, `TransferGAN`): pretrain on the base classes, augment
the k support images to a pool (4 -> 300), fine-tune both pretrained networks on the pool.
"""

from __future__ import annotations

import torch
import torch.nn as nn

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
class DCGAN(StandardNormalLatent, TransferGAN):
    title = "DCGAN (pretrain on base classes, fine-tune on augmented support)"
    reference = "Radford et al., ICLR 2016; transfer protocol of Batra, Mahajan and Vartak, Few Shot Learning for Image Generation"
    version = "1"
    Config = GANConfig

    def build(self, task: FewShotTask) -> tuple[nn.Module, nn.Module]:
        cfg = self.config
        return (
            DCGANGenerator(cfg.latent_dim, task.image_shape, cfg.width),
            DCGANDiscriminator(task.image_shape, cfg.width),
        )

    def discriminator_loss(self, real, labels, generator):
        with torch.no_grad():
            fake = self.generate(self.sample_latent(len(real), generator).to(self.device))
        return discriminator_bce(self.discriminator_net(real)[0], self.discriminator_net(fake)[0])

    def generator_loss(self, n, labels, generator):
        fake = self.generate(self.sample_latent(n, generator).to(self.device))
        return {"loss": generator_nonsaturating(self.discriminator_net(fake)[0])}

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim
