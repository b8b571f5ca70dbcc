"""What every GAN method shares: DCGAN-style networks, the adversarial losses, the alternating training
loop with its divergence checks, and the transfer-learning protocol of the DCGAN/cGAN/InfoGAN rows.

Images inside the GANs are in [-1, 1] (tanh generator output, as in DCGAN); the harness's [0, 1]
images are mapped on the way in (`to_signed`) and out (`to_unit`).

The transfer protocol ("Few Shot Learning for Image Generation", section 2): pretrain generator
and discriminator on the base classes; augment the k support images to a pool (4 -> 300 in the
report) with the shared seeded augmentation (`bench.sdk.augment`); fine-tune both pretrained networks
on the pool. `TransferGAN` implements it once; a method supplies its networks and its losses.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.method import Method, PretrainThenAdapt, SamplesFromLatent, TrainingDiverged
from bench.sdk.progress import Reporter
from bench.sdk.task import FewShotTask
from bench.sdk.training import minibatches, run_steps, seeded_init
from methods._nets import ResidualBlock, norm_2d


def to_signed(images: torch.Tensor) -> torch.Tensor:
    return images * 2 - 1


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) / 2).clamp(0, 1)


# -- networks ---------------------------------------------------------------------------------
class _ProjectingGenerator(nn.Module):
    """z -> linear -> (2w, H/4, W/4) feature map -> `self.net` (which subclasses build): the shared generator stem."""

    def __init__(self, input_dim: int, image_shape: tuple[int, int, int], width: int, name: str):
        super().__init__()
        _, height, width_px = image_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"the {name} needs image sides divisible by 4, got {height}x{width_px}")
        self.start = (2 * width, height // 4, width_px // 4)
        self.project = nn.Linear(input_dim, math.prod(self.start))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.start))


class DCGANGenerator(_ProjectingGenerator):
    """(n, input_dim) -> (n, C, H, W) in [-1, 1]: a linear map to (2w, H/4, W/4), then two stride-2
    transposed convolutions (the DCGAN generator sized for 28-32 px images)."""

    def __init__(self, input_dim: int, image_shape: tuple[int, int, int], width: int = 64, norm: str = "batch"):
        super().__init__(input_dim, image_shape, width, "DCGAN generator")
        self.net = nn.Sequential(
            norm_2d(norm, 2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            norm_2d(norm, width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, image_shape[0], 4, 2, 1),
            nn.Tanh(),
        )


class DCGANDiscriminator(nn.Module):
    """(n, C, H, W) [+ (n, condition_dim)] -> adversarial logit (n,) and optional auxiliary outputs (n, aux_dim).

    Two stride-2 convolutions with leaky ReLU, then a hidden dense layer that also receives the
    condition vector (a one-hot label for the conditional GAN), then the adversarial head and, for
    InfoGAN, the auxiliary Q head that shares the whole trunk.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int = 64,
        norm: str = "batch",
        condition_dim: int = 0,
        aux_dim: int = 0,
        hidden: int = 256,
    ):
        super().__init__()
        channels, height, width_px = image_shape
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            norm_2d(norm, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = 2 * width * (height // 4) * (width_px // 4)
        self.hidden = nn.Sequential(nn.Linear(features + condition_dim, hidden), nn.LeakyReLU(0.2))
        self.adversarial = nn.Linear(hidden, 1)
        self.aux = nn.Linear(hidden, aux_dim) if aux_dim else None

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.trunk(x)
        if condition is not None:
            h = torch.cat([h, condition], 1)
        h = self.hidden(h)
        return self.adversarial(h).squeeze(1), (self.aux(h) if self.aux is not None else None)


class ResNetGenerator(_ProjectingGenerator):
    """The residual generator of FIGR's original (layer norm, PReLU), at a configurable depth."""

    def __init__(self, input_dim: int, image_shape: tuple[int, int, int], width: int = 64, blocks_per_scale: int = 2):
        super().__init__(input_dim, image_shape, width, "residual generator")
        layers: list[nn.Module] = []
        for c_in, c_out in ((2 * width, 2 * width), (2 * width, width)):
            layers.append(ResidualBlock(c_in, c_out, "up"))
            layers += [ResidualBlock(c_out, c_out) for _ in range(blocks_per_scale - 1)]
        self.net = nn.Sequential(
            *layers, norm_2d("layer", width), nn.PReLU(width), nn.Conv2d(width, image_shape[0], 3, 1, 1), nn.Tanh()
        )


class ResNetDiscriminator(nn.Module):
    """The residual critic of FIGR's original (layer norm, PReLU), at a configurable depth; returns (logit, None)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64, blocks_per_scale: int = 2):
        super().__init__()
        channels, height, width_px = image_shape
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1)]
        for c_in, c_out in ((width, width), (width, 2 * width)):
            layers.append(ResidualBlock(c_in, c_out, "down"))
            layers += [ResidualBlock(c_out, c_out) for _ in range(blocks_per_scale - 1)]
        self.trunk = nn.Sequential(*layers, norm_2d("layer", 2 * width), nn.PReLU(2 * width), nn.Flatten())
        self.adversarial = nn.Linear(2 * width * (height // 4) * (width_px // 4), 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return self.adversarial(self.trunk(x)).squeeze(1), None


# -- losses -----------------------------------------------------------------------------------
def discriminator_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The original GAN discriminator loss (Goodfellow et al.), with its mean probabilities for the collapse check."""
    loss = F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return {
        "loss": loss,
        "p_real": torch.sigmoid(real_logits).mean().detach(),
        "p_fake": torch.sigmoid(fake_logits).mean().detach(),
    }


def generator_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss used by DCGAN, cGAN and InfoGAN."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    interpolates = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1).pow(2).mean()


def critic_wgan_gp(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator,
    penalty_weight: float = 10.0,
) -> dict[str, torch.Tensor]:
    """The WGAN-GP critic loss: E[D(fake)] - E[D(real)] + lambda * gradient penalty."""
    wasserstein = critic(fake).mean() - critic(real).mean()
    penalty = gradient_penalty(critic, real, fake, generator)
    return {
        "loss": wasserstein + penalty_weight * penalty,
        "wasserstein": -wasserstein.detach(),
        "penalty": penalty.detach(),
    }


# -- the alternating training loop -------------------------------------------------------------
@dataclass
class Player:
    """One side of the game: its loss (a function of the step returning {"loss": ..., logged terms}) and optimiser."""

    name: str
    loss_fn: Callable[[int], dict[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer


@dataclass
class CollapseCheck:
    """Discriminator collapse: over a whole window of steps, D is sure of every real and every fake image.

    Reads the discriminator's logged `p_real` and `p_fake`. A confident discriminator for a few
    dozen steps is normal early in training (the non-saturating generator loss still has a
    gradient and catches up); one that stays certain for `window` steps has won the game."""

    window: int = 200
    certainty: float = 0.999
    history: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, step: int, terms: dict[str, float]) -> str | None:
        if "d_p_real" not in terms:
            return None
        self.history.append((terms["d_p_real"], terms["d_p_fake"]))
        if len(self.history) < self.window:
            return None
        recent = self.history[-self.window :]
        p_real = sum(r for r, _ in recent) / self.window
        p_fake = sum(f for _, f in recent) / self.window
        if p_real > self.certainty and p_fake < 1 - self.certainty:
            return (
                f"discriminator collapse: mean D(real) {p_real:.4f} and D(fake) {p_fake:.4f} over steps "
                f"{step - self.window + 1}-{step}; the generator no longer fools it"
            )
        return None


def alternate(
    players: list[Player],
    steps: int,
    *,
    phase: str,
    reporter: Reporter | None = None,
    collapse: CollapseCheck | None = None,
    curve_points: int = 200,
) -> dict:
    """`steps` rounds of one optimiser step per player, in order (discriminator, then generator), on `run_steps`.

    Stops with `TrainingDiverged` (phase, term, step) on a non-finite term or a collapse. Returns
    the mean of each logged term (prefixed with the player's name) over the last tenth of the
    steps, and `curve`: the terms averaged over blocks of steps (`Curve`), for the loss-curve plot.
    """

    def play_round(step: int) -> dict[str, float]:
        terms: dict[str, float] = {}
        for player in players:
            values = player.loss_fn(step)
            for key, value in values.items():
                number = float(value.detach())
                if not math.isfinite(number):
                    raise TrainingDiverged(f"{phase}: {player.name}_{key} became {number} at step {step}")
                terms[f"{player.name}_{key}"] = number
            player.optimizer.zero_grad(set_to_none=True)
            values["loss"].backward()
            player.optimizer.step()
        if collapse is not None and (reason := collapse(step, terms)):
            raise TrainingDiverged(f"{phase}: {reason}")
        return terms

    return run_steps(play_round, steps, phase=phase, reporter=reporter, curve_points=curve_points)


class LatentSampler(SamplesFromLatent):
    """Sampling for a generator network with a latent prior: `sample` is `decode(sample_latent(...))` in [0, 1]."""

    generator_net: nn.Module
    sample_batch_size: int
    device: torch.device

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] for latent codes produced by `sample_latent` (on the device)."""
        return self.generator_net(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # Differentiable in z: LPIPS backtracking optimises latents through it.
        return to_unit(self.generate(z.to(self.device))).cpu()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        self.generator_net.eval()
        return super().sample(n, generator)


# -- the transfer-learning protocol ----------------------------------------------------------
@dataclass(frozen=True)
class TransferBudget:
    pretrain_steps: int  # (discriminator step + generator step) rounds on the base classes
    finetune_steps: int  # rounds on the augmented support pool
    pool_size: int  # support images after augmentation


# 20 epochs of the 54,000 Fashion-MNIST base images at batch 64 (16,880 rounds), then the pool of
# 300 augmented support images for 100 epochs at batch 64 (470 rounds): the report's protocol.
TRANSFER_PROFILES = {
    "smoke": TransferBudget(pretrain_steps=20, finetune_steps=10, pool_size=32),
    # About 0.22 s per round at one thread (width 64, batch 64): 550 rounds, 2 minutes.
    "quick": TransferBudget(pretrain_steps=400, finetune_steps=150, pool_size=300),
    # 8 epochs (6,752 rounds, about 25 minutes at one thread), then the report's fine-tuning (docs/methods.md#standard).
    "standard": TransferBudget(pretrain_steps=6752, finetune_steps=470, pool_size=300),
    "paper": TransferBudget(pretrain_steps=16880, finetune_steps=470, pool_size=300),
}


class TransferGAN(PretrainThenAdapt, LatentSampler, Method):
    """A GAN trained by the transfer protocol. Subclasses build the networks and define the losses.

    Capabilities: `latent` (the generator's full input vector is the latent code; `decode` is
    differentiable, so LPIPS backtracking applies) and `transfer` (pretraining uses only the base set).
    """

    Budget = TransferBudget
    profiles = TRANSFER_PROFILES
    capabilities = frozenset({"latent", "latent_prior", "transfer"})

    # -- what a GAN defines -----------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, task: FewShotTask) -> tuple[nn.Module, nn.Module]:
        """The generator and the discriminator for this task's image shape (and class count)."""

    @abc.abstractmethod
    def discriminator_loss(
        self, real: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Loss of the discriminator on a batch of real images (in [-1, 1]) with their labels."""

    @abc.abstractmethod
    def generator_loss(self, n: int, labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss of the generator for a batch of `n` generated images (conditioned on `labels` where it applies)."""

    @abc.abstractmethod
    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Latent codes of the prior the samples are drawn from (for the novel class, where conditional)."""

    # -- the protocol -------------------------------------------------------------------------------
    def pretrain_on_base(
        self, task: FewShotTask, budget: TransferBudget, seed: int, generator: torch.Generator
    ) -> None:
        """Train both networks on the base classes (with their labels)."""
        with seeded_init(seed):
            self.generator_net, self.discriminator_net = (m.to(self.device) for m in self.build(task))
        self.novel_label = task.novel_class
        self.g_optimizer, self.d_optimizer = self._optimizers()
        if len(task.base_images):
            with self.phase("pretrain"):
                self._train(task.base_images, task.base_labels, budget.pretrain_steps, "pretrain", generator)
        else:
            self.training_log["pretrain"] = "skipped: the task has no base images"

    def adapt_to_support(self, task: FewShotTask, budget: TransferBudget, generator: torch.Generator) -> None:
        """Fine-tune the pretrained networks on the support set augmented to `pool_size` images."""
        self.novel_label = task.novel_class
        with self.phase("augment"):
            pool = augment(task.support, budget.pool_size, generator, self.config.augment, task.allows_hflip)
        labels = torch.full((len(pool),), task.novel_class, dtype=torch.int64)
        # Fresh optimiser state for the new data, as reloading saved weights into a new run would give.
        self.g_optimizer, self.d_optimizer = self._optimizers()
        with self.phase("finetune"):
            self._train(pool, labels, budget.finetune_steps, "finetune", generator)
        self.generator_net.eval()
        self.discriminator_net.eval()

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        cfg = self.config
        return (
            torch.optim.Adam(self.generator_net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)),
            torch.optim.Adam(self.discriminator_net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)),
        )

    def _train(
        self, images: torch.Tensor, labels: torch.Tensor, steps: int, phase: str, generator: torch.Generator
    ) -> None:
        self.generator_net.train()
        self.discriminator_net.train()
        indices = minibatches(torch.arange(len(images)), self.config.batch_size, generator)
        batch: dict[str, torch.Tensor] = {}

        def d_loss(step: int) -> dict[str, torch.Tensor]:
            index = next(indices)
            batch["labels"] = labels[index].to(self.device)
            real = to_signed(images[index].to(self.device))
            return self.discriminator_loss(real, batch["labels"], generator)

        def g_loss(step: int) -> dict[str, torch.Tensor]:
            return self.generator_loss(len(batch["labels"]), batch["labels"], generator)

        self.training_log[phase] = alternate(
            [Player("d", d_loss, self.d_optimizer), Player("g", g_loss, self.g_optimizer)],
            steps,
            phase=phase,
            reporter=self.reporter,
            collapse=CollapseCheck(window=max(200, steps // 4)),
        )


@dataclass(frozen=True)
class GANConfig:
    """Settings shared by the transfer GANs (the DCGAN paper's optimiser: Adam, lr 2e-4, beta1 0.5)."""

    latent_dim: int = 100
    width: int = 64
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    augment: AugmentConfig = AugmentConfig()
