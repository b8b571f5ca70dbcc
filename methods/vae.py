"""Convolutional VAE with transfer learning: pretrain on the base classes, fine-tune on the augmented support set.

Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014. The few-shot protocol is the
transfer-learning baseline of "Few Shot Learning for Image Generation" (pretrain on the base
classes, augment the k support images to a pool, e.g. 4 -> 300, fine-tune the pretrained
weights on the pool) applied to a VAE.

Loss (negative ELBO per image, nats): the observation model's reconstruction term summed over
pixels + `kl_weight` * KL(q(z|x) || N(0, I)). Samples are the decoder's mean image
sigmoid(decoder(z)) for z ~ N(0, I).

Log-likelihood (capability `log_likelihood`, for the `nll` metric): the observation model of
`methods._vae.observation_for` (Bernoulli on BINARISED grey images, x_bin = (x > 0.5), trained
with the cross-entropy on the continuous values; a discretised logistic on the 8-bit values of
colour images). `log_likelihood` makes the observation itself (a no-op on what `nll` passes).
log p(x) is the IWAE estimate of `bench.sdk.likelihood` with q(z|x) the encoder, p(z) = N(0, I),
computed with the model in eval mode (BatchNorm uses its running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.likelihood import iwae_log_likelihood
from bench.sdk.method import Method, PretrainThenAdapt, SamplesFromLatent, StandardNormalLatent
from bench.sdk.task import FewShotTask
from bench.sdk.training import make_generator, minibatches, optimise, seeded_init
from methods import register
from methods._vae import ObservedModel, gaussian_kl, observation_for, reparameterise


@dataclass
class VAEConfig:
    latent_dim: int = 32
    width: int = 32  # channels of the first conv layer; the second has twice as many
    kl_weight: float = 1.0
    batch_size: int = 64
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    augment: AugmentConfig = AugmentConfig()


@dataclass(frozen=True)
class VAEBudget:
    pretrain_steps: int  # optimiser steps on the base classes
    finetune_steps: int  # optimiser steps on the augmented support pool
    pool_size: int  # support images after augmentation


class ConvVAE(ObservedModel):
    """Two stride-2 conv layers down to (H/4, W/4), a Gaussian latent, and the mirror decoder."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int):
        super().__init__()
        channels, height, width_px = image_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"ConvVAE needs image sides divisible by 4, got {height}x{width_px}")
        self.feature_shape = (2 * width, height // 4, width_px // 4)
        features = 2 * width * (height // 4) * (width_px // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(features, 256),
            nn.LeakyReLU(0.2),
        )
        self.to_mean = nn.Linear(256, latent_dim)
        self.to_logvar = nn.Linear(256, latent_dim)
        self.decoder_input = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, features), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )
        self.observation = observation_for(image_shape)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mean(h), self.to_logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decoder_input(z).view(-1, *self.feature_shape))


def negative_elbo(
    model: ConvVAE, x: torch.Tensor, kl_weight: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Mean over the batch of reconstruction + kl_weight * KL, in nats per image."""
    mean, logvar = model.encode(x)
    reconstruction = model.observation.loss(model.decode_logits(reparameterise(mean, logvar, generator)), x)
    kl = gaussian_kl(mean, logvar).mean()
    return {"loss": reconstruction + kl_weight * kl, "reconstruction": reconstruction, "kl": kl}


@register
class VAE(StandardNormalLatent, PretrainThenAdapt, SamplesFromLatent, Method):
    title = "Convolutional VAE (pretrain on base classes, fine-tune on augmented support)"
    reference = "Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014"
    # 2: colour images are modelled by a discretised logistic (grey-scale ones as in 1).
    version = "2"
    Config = VAEConfig
    Budget = VAEBudget
    profiles = {
        "smoke": VAEBudget(pretrain_steps=20, finetune_steps=10, pool_size=32),
        "quick": VAEBudget(pretrain_steps=1200, finetune_steps=300, pool_size=300),
        # The paper's 16,880 steps plateaued at step 3,570 (results/curves/training-standard-a.json): 6,000 is the
        # shortest budget whose curve has plateaued well inside it (docs/methods.md#standard).
        "standard": VAEBudget(pretrain_steps=6000, finetune_steps=1000, pool_size=300),
        # The transfer protocol of the FIGR report: 20 epochs of the 54,000 base images at
        # batch 64 (16,880 steps), then the support set augmented 4 -> 300.
        "paper": VAEBudget(pretrain_steps=16880, finetune_steps=1000, pool_size=300),
    }
    capabilities = frozenset({"latent", "latent_prior", "log_likelihood", "reconstruct", "embed", "transfer"})
    # Images per encoder pass and (image, importance sample) pairs per decoder pass in log_likelihood.
    likelihood_batch_size: int = 64
    likelihood_chunk_size: int = 2048

    def pretrain_on_base(self, task: FewShotTask, budget: VAEBudget, seed: int, generator: torch.Generator) -> None:
        """Train on the base classes."""
        with seeded_init(seed):
            self.model = ConvVAE(task.image_shape, self.config.latent_dim, self.config.width).to(self.device)
        if len(task.base_images):
            with self.phase("pretrain"):
                self._train(task.base_images, budget.pretrain_steps, self.config.pretrain_lr, "pretrain", generator)
        else:  # the unconditional protocol has no base set: train from scratch on the support set
            self.training_log["pretrain"] = "skipped: the task has no base images"

    def adapt_to_support(self, task: FewShotTask, budget: VAEBudget, generator: torch.Generator) -> None:
        """Fine-tune the pretrained weights on the augmented support set."""
        with self.phase("augment"):
            pool = augment(task.support, budget.pool_size, generator, self.config.augment, task.allows_hflip)
        with self.phase("finetune"):
            self._train(pool, budget.finetune_steps, self.config.finetune_lr, "finetune", generator)
        self.model.eval()

    def _train(self, images: torch.Tensor, steps: int, lr: float, phase: str, generator: torch.Generator) -> None:
        cfg = self.config
        self.model.train()
        batches = minibatches(images, cfg.batch_size, generator)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

        def loss_fn(step: int) -> dict[str, torch.Tensor]:
            return negative_elbo(self.model, next(batches).to(self.device), cfg.kl_weight, generator)

        self.training_log[phase] = optimise(
            loss_fn, optimizer, steps, phase=phase, reporter=self.reporter, curve_points=200
        )

    # -- sampling and capabilities -----------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # Differentiable in z: LPIPS backtracking optimises latents through it.
        return torch.sigmoid(self.model.decode_logits(z.to(self.device))).cpu()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.model.encode(x.to(self.device))
        return self.decode(mean)

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, num_samples: int = 1000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """IWAE estimate of log p(x) in nats per image, (n,) float64 on the CPU.

        `x` (n, C, H, W) in [0, 1] is made the observation first (binarised or 8-bit; module docstring);
        `num_samples` importance samples per image; noise from the CPU `generator` (default:
        a generator seeded with 0, so the call is deterministic).
        """
        generator = generator if generator is not None else make_generator(0)
        model = self.model
        was_training = model.training
        model.eval()  # BatchNorm must use its running statistics, not the batch's
        try:
            return iwae_log_likelihood(
                model.observation.observe(x.float()).to(self.device),
                model.encode,
                lambda x_rows, z: model.observation.log_prob(model.decode_logits(z), x_rows),
                num_samples,
                generator,
                batch_size=self.likelihood_batch_size,
                chunk_size=self.likelihood_chunk_size,
            )
        finally:
            model.train(was_training)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x.to(self.device))[0].cpu()
