"""VCE: Variational Convertor-Encoder with the large-margin VAE (LMVAE) loss.

Li, Han and Xing, "VCE: Variational Convertor-Encoder for One-Shot Generalization" (text in
`../shared/papers/vce-variational-convertor-encoder.txt`). VCE transforms an image instead of
generating one: an encoder sees a pair (x, q) of images of one class and outputs the
"transformation rule" z ~ q(z | x, q); a convertor applies a rule to the condition image q,
p(x | z, q). One-shot generation for a new class takes one of its images as q, draws z from the
prior N(0, I) and converts q. Nothing is trained on the new class ("transfer to new tasks
without additional training"): `adapt` only keeps the support images as conditions.

Networks (section 4.2): encoder and convertor are stride-1 residual networks (paper: 8 residual
blocks of two 3x3 convolutions with 32 channels, and one 5x5 convolution, "SAME" padding), so
pixel coordinates are preserved and the convertor edits pixels of q rather than painting a new
image. Here the 5x5 convolution is the stem of each network and a 1x1 convolution maps the last
block to the output (the paper does not say how the outputs are read out). The encoder reads
(x, q) stacked as channels and averages its 4-channel output over each row: the row's two means
and two log-variances.

Noise injection (section 3.3): the latent has two numbers per image row ("twice the width of the
image"), and "every two sampled noises are juxtaposed with one line of the conditional image".
Here row r's two values enter the convertor as two input channels beside q's own, constant along
row r: the convertor reads (C + 2, H, W), and every pixel of row r sees its row's rule in the
first layer. The sentence also reads as two extra pixel columns at the ends of the row (version
1 of this method did that); under that reading the rule cannot act on the image's centre, where
the garment or stroke is: in a stride-1 network an input pixel's influence decays far faster
than the receptive field grows, so after training, conversions of one condition by different
rules were identical in the 10 central columns and the encoder's KL(z) collapsed to about 2 nats
(measured: docs/notes/quick-budget-studies.md, "VCE's rule"). The channel reading is the one
under which the rule can carry information, so it is the one implemented.

Training (section 4.3, Algorithms 1 and 2), in three phases:
1. Reptile pre-training with the plain VAE loss (Algorithm 2): per meta-iteration, one base class,
   one condition q and a batch of other images x_k of that class; `reptile_inner_steps` Adam steps
   on a copy, then phi <- phi + `reptile_step_size` * (phi~ - phi) (`bench.sdk.reptile`).
2. The plain VAE loss until convergence: L = L_CON(x, y) + L_KL(z), y = Con(z, q), z ~ q(z|x, q).
3. The LMVAE loss (equations 11-12, Algorithm 1): with z_r = Enc(y, q) the converted image re-encoded,
   L_E = KL(z) + lambda * max(0, m - KL(z_r)) + (1 - sigma) L_CON(x, y) + sigma L_REG(q, y)  (encoder step),
   L_C = KL(z) + lambda * KL(z_r) + (1 - sigma) L_CON(x, y) + sigma L_REG(q, y)              (convertor step),
   the encoder updated first, z_r recomputed with the updated encoder for the convertor's loss;
   in L_E the converted image is a constant (the encoder acts as the discriminator of converted
   images, IntroVAE-style). L_CON and L_REG are the observation's reconstruction losses of y against x and q
   (`methods._vae.observation_for`: Bernoulli cross-entropies on grey images).
   The ablation `vce-vae` keeps the plain VAE loss in phase 3 (Table 1's "Our VCE, VAE" row).
Batches follow section 3.3: every image of a batch comes from one class and shares one condition
image (paper: batch 19, one Omniglot character's 20 drawings minus the condition). Paper settings:
m = 50, lambda = 0.2, sigma = 0.15, Adam with lr 2e-4.

Logged: phases 2 and 3 log KL(z) and KL(z_r) per step (in the VAE phases KL(z_r) is only
measured, so that `vce` and `vce-vae` compare the same terms); `training_log["vce"]` holds both
curves over the two phases and what the trained rule carries on fresh base-class batches
(`VCE._measure_rule`).

Likelihood (capability `log_likelihood`, the `nll` metric): VCE's Table 1 reports the
conditional NLL -log p(x | q) of a held-out image given one condition image of its class. The
sampling model here picks the condition uniformly among the k support images, so its likelihood
is the mixture p(x) = (1/k) sum_j p(x | s_j), which for one shot is exactly Table 1's quantity.
Each p(x | s_j) is an IWAE estimate (`bench.sdk.likelihood`) with proposal q(z | x, s_j), prior
N(0, I) and the observation model of `methods._vae.observation_for` (Bernoulli(sigmoid(Con(z, s_j))) on
the BINARISED grey image, a discretised logistic on 8-bit colour values); the K
importance samples are split evenly over the k conditions (stratified), so the cost per image
does not grow with k. log of the mean of the k unbiased estimates is again a stochastic lower
bound on log p(x).

Latent (capability `latent`, for LPIPS backtracking): the rule z (2H numbers) plus one discrete
coordinate, the index of the condition image. `decode` is differentiable in z; the index is
rounded, carries no gradient, and stays where `sample_latent` drew it (backtracking searches it
only through its restarts).

Budget note: the network's size is part of the budget (`residual_blocks`, `channels`), because
it sets the cost of every step and of every metric that runs the model (NLL, backtracking): the
paper's 8 blocks x 32 channels costs about 8 times the CPU-sized 4 x 16 per image.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.ais import LatentPrior
from bench.sdk.likelihood import iwae_log_likelihood
from bench.sdk.method import Method, PretrainThenAdapt, SamplesFromLatent
from bench.sdk.reptile import MetaNetwork, reptile
from bench.sdk.task import FewShotTask
from bench.sdk.training import finite_loss, make_generator, run_steps, seeded_init
from methods import register
from methods._nets import ResidualBlock
from methods._vae import ObservedModel, gaussian_kl, observation_for, reparameterise

LOSSES = ("lmvae", "vae")
RULE_BATCHES = 10  # fresh base-class batches on which the trained rule is measured (`training_log["vce"]`)


@dataclass(frozen=True)
class VCEConfig:
    loss: str = "lmvae"  # phase 3: "lmvae" (equations 11-12) or "vae" (the plain-VAE-loss ablation)
    norm: str = "none"  # inside the residual blocks; never batch norm (Reptile averages weights, not statistics)
    batch_size: int = 19  # images of one class per step, sharing one condition (the paper's 19)
    lr: float = 2e-4
    margin: float = 50.0  # m
    margin_weight: float = 0.2  # lambda
    style_weight: float = 0.15  # sigma: weight of the style regulariser L_REG
    reptile_inner_lr: float = 1e-3
    reptile_step_size: float = 0.25  # alpha of phi <- phi + alpha (phi~ - phi)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown VCE loss '{self.loss}' (valid: {', '.join(LOSSES)})")


@dataclass(frozen=True)
class VCEBudget:
    residual_blocks: int  # per network (paper 8)
    channels: int  # per residual block (paper 32)
    reptile_iterations: int  # phase 1 meta-iterations (Algorithm 2)
    reptile_inner_steps: int  # Adam steps on the copy per meta-iteration
    vae_steps: int  # phase 2
    final_steps: int  # phase 3: LMVAE (or, for the ablation, more VAE steps)


class StrideOneResNet(nn.Module):
    """5x5 stem convolution, `blocks` residual blocks (two 3x3 convolutions each), 1x1 read-out: sizes preserved."""

    def __init__(self, c_in: int, c_out: int, channels: int, blocks: int, norm: str):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, channels, 5, 1, 2),
            *[ResidualBlock(channels, channels, norm=norm) for _ in range(blocks)],
            nn.PReLU(channels),
            nn.Conv2d(channels, c_out, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvertorEncoder(ObservedModel):
    """The encoder q(z | x, q) and the convertor p(x | z, q); z has two numbers per image row."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int, blocks: int, norm: str):
        super().__init__()
        self.image_channels, self.height, self.width = image_shape
        self.encoder = StrideOneResNet(2 * self.image_channels, 4, channels, blocks, norm)
        self.convertor = StrideOneResNet(self.image_channels + 2, self.image_channels, channels, blocks, norm)
        self.observation = observation_for(image_shape)

    @property
    def latent_dim(self) -> int:
        return 2 * self.height

    def encode(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each (n, 2H): per row, the Gaussian of the row's two noise values."""
        rows = self.encoder(torch.cat([x, condition], 1)).mean(3)  # (n, 4, H)
        mean = rows[:, :2].transpose(1, 2).reshape(x.shape[0], -1)
        logvar = rows[:, 2:].transpose(1, 2).reshape(x.shape[0], -1).clamp(-10, 10)
        return mean, logvar

    def convert_logits(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The observation's logits (n, C, H, W) of the condition converted by the rule z (n, 2H).

        Row r's two noise values z[2r], z[2r + 1] are laid along that row as two extra input
        channels, so every pixel of the row reads them in the first layer (module docstring).
        """
        n = condition.shape[0]
        noise = z.view(n, self.height, 2).transpose(1, 2).unsqueeze(3).expand(n, 2, self.height, self.width)
        return self.convertor(torch.cat([condition, noise], 1))


def kl_curve(vae_log: dict, final_log: dict, vae_steps: int) -> dict[str, list[float]]:
    """KL(z) and KL(z_r) over phases 2 and 3 (the `vae` and the final phase's curves, steps counted from phase 2)."""
    curves = [vae_log["curve"], final_log["curve"]]
    return {
        "step": vae_log["curve"]["step"] + [vae_steps + step for step in final_log["curve"]["step"]],
        **{term: [v for curve in curves for v in curve.get(term, [])] for term in ("kl", "kl_converted")},
    }


def class_members(labels: torch.Tensor, minimum: int) -> list[torch.Tensor]:
    """Indices of each class with at least `minimum` images (a condition and at least one other image)."""
    members = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    return [m for m in members if len(m) >= minimum]


@register
class VCE(PretrainThenAdapt, SamplesFromLatent, Method):
    title = "VCE: Variational Convertor-Encoder, LMVAE loss (one-shot conversion of a support image)"
    reference = "Li, Han and Xing, VCE: Variational Convertor-Encoder for One-Shot Generalization"
    # 3: colour images are modelled by a discretised logistic (grey-scale ones as in 2).
    version = "3"
    Config = VCEConfig
    Budget = VCEBudget
    profiles = {
        "smoke": VCEBudget(
            residual_blocks=1, channels=8, reptile_iterations=2, reptile_inner_steps=2, vae_steps=6, final_steps=4
        ),
        # About 2.5 minutes at one thread (Fashion-MNIST 4-shot): about 170 ms per VAE step and 330 ms
        # per LMVAE step at batch 19 with 6 blocks of 16 channels (12 channels measured no faster, 4 blocks
        # 30% faster; 6 blocks let a pixel see 14 rows above and below it, half the image).
        "quick": VCEBudget(
            residual_blocks=6, channels=16, reptile_iterations=30, reptile_inner_steps=5, vae_steps=400, final_steps=150
        ),
        # The quick networks trained longer: 300 Reptile iterations, 6,000 VAE steps and 2,000 final steps
        # (about 0.57 s, 0.125 s and 0.26 s each at one thread: 25 minutes) (docs/methods.md#standard).
        "standard": VCEBudget(
            residual_blocks=6,
            channels=16,
            reptile_iterations=300,
            reptile_inner_steps=5,
            vae_steps=6000,
            final_steps=2000,
        ),
        # Section 4.2: 8 blocks of 32 channels, 600,000 steps in all (the split between the VAE and
        # LMVAE phases is not given; 2:1 here), after "a few epochs" of Reptile pre-training.
        "paper": VCEBudget(
            residual_blocks=8,
            channels=32,
            reptile_iterations=2000,
            reptile_inner_steps=5,
            vae_steps=400_000,
            final_steps=200_000,
        ),
    }
    capabilities = frozenset({"latent", "latent_prior", "log_likelihood", "transfer"})
    needs_base_classes = True  # learns to convert between images of one class, on the base classes
    likelihood_description = (
        "conditional on the support images: p(x) = (1/k) sum_j p(x | s_j), each an IWAE "
        "estimate with K/k importance samples (k = 1: VCE's Table 1 quantity p(x | q))"
    )
    likelihood_batch_size: int = 64
    likelihood_chunk_size: int = 2048

    # -- training -----------------------------------------------------------------------
    def pretrain_on_base(self, task: FewShotTask, budget: VCEBudget, seed: int, generator: torch.Generator) -> None:
        """The three training phases, on pairs of base-class images."""
        cfg = self.config
        members = class_members(task.base_labels, 2)
        if not members:
            raise ValueError(
                "vce trains on pairs of images of one class and the task has no base class with two images"
            )
        with seeded_init(seed):
            self.model = ConvertorEncoder(task.image_shape, budget.channels, budget.residual_blocks, cfg.norm).to(
                self.device
            )
        images = task.base_images

        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            """One class's condition image (repeated) and up to `batch_size` other images of it."""
            pool = members[int(torch.randint(len(members), (1,), generator=generator))]
            chosen = pool[torch.randperm(len(pool), generator=generator)[: cfg.batch_size + 1]]
            x = images[chosen[1:]].to(self.device)
            return x, images[chosen[:1]].to(self.device).expand_as(x)

        self.model.train()
        with self.phase("reptile"):
            self.training_log["reptile"] = self._reptile(batch, budget, generator)
        vae_optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        with self.phase("vae"):
            self.training_log["vae"] = run_steps(
                lambda step: self._vae_step(self.model, *batch(), vae_optimizer, generator, "vae", step, True),
                budget.vae_steps,
                phase="vae",
                reporter=self.reporter,
                curve_points=200,
            )
        final = "lmvae" if cfg.loss == "lmvae" else "vae-continued"  # the ablation: no LMVAE phase
        with self.phase(final):
            if cfg.loss == "lmvae":
                encoder_optimizer = torch.optim.Adam(self.model.encoder.parameters(), lr=cfg.lr)
                convertor_optimizer = torch.optim.Adam(self.model.convertor.parameters(), lr=cfg.lr)

                def step_fn(step: int) -> dict:
                    return self._lmvae_step(*batch(), encoder_optimizer, convertor_optimizer, generator, step)
            else:

                def step_fn(step: int) -> dict:
                    return self._vae_step(self.model, *batch(), vae_optimizer, generator, final, step, True)

            self.training_log[final] = run_steps(
                step_fn, budget.final_steps, phase=final, reporter=self.reporter, curve_points=200
            )
        self.model.eval()
        self.training_log["vce"] = {
            **self._measure_rule(batch, RULE_BATCHES, generator),
            "curve": kl_curve(self.training_log["vae"], self.training_log[final], budget.vae_steps),
        }

    @staticmethod
    def _vae_step(
        model: ConvertorEncoder,
        x: torch.Tensor,
        condition: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        phase: str,
        step: int,
        log_kl_converted: bool = False,
    ) -> dict[str, float]:
        """One step of the plain VAE loss L_CON(x, y) + KL(z) on `model` (the network itself, or Reptile's copy).

        With `log_kl_converted`, also logs KL(z_r) of the converted images re-encoded (no gradient),
        the term the LMVAE loss trains on, so the `vce` and `vce-vae` logs compare the same terms.
        """
        mean, logvar = model.encode(x, condition)
        logits = model.convert_logits(reparameterise(mean, logvar, generator), condition)
        conversion = model.observation.loss(logits, x)
        kl = gaussian_kl(mean, logvar).mean()
        loss = finite_loss(conversion + kl, phase, step)
        terms = {"loss": loss.item(), "conversion": conversion.item(), "kl": kl.item()}
        if log_kl_converted:
            with torch.no_grad():
                terms["kl_converted"] = gaussian_kl(*model.encode(torch.sigmoid(logits), condition)).mean().item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return terms

    def _lmvae_step(
        self,
        x: torch.Tensor,
        condition: torch.Tensor,
        encoder_optimizer: torch.optim.Optimizer,
        convertor_optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        step: int,
    ) -> dict[str, float]:
        """Algorithm 1: an encoder step on L_E, then a convertor step on L_C with z_r re-encoded by the updated encoder."""
        cfg, model = self.config, self.model
        mean, logvar = model.encode(x, condition)
        kl = gaussian_kl(mean, logvar).mean()
        logits = model.convert_logits(reparameterise(mean, logvar, generator), condition)
        converted = torch.sigmoid(logits)
        data_terms = (1 - cfg.style_weight) * model.observation.loss(logits, x) + cfg.style_weight * (
            model.observation.loss(logits, condition)
        )
        kl_converted = gaussian_kl(*model.encode(converted.detach(), condition))
        encoder_loss = finite_loss(
            kl + cfg.margin_weight * F.relu(cfg.margin - kl_converted).mean() + data_terms,
            "lmvae",
            step,
            "encoder loss",
        )
        encoder_params = list(model.encoder.parameters())
        gradients = torch.autograd.grad(encoder_loss, encoder_params, retain_graph=True)
        for parameter, gradient in zip(encoder_params, gradients):
            parameter.grad = gradient
        encoder_optimizer.step()

        # The convertor's loss sees the updated encoder (Algorithm 1, line 10); KL(z) is a constant to it.
        kl_reencoded = gaussian_kl(*model.encode(converted, condition)).mean()
        convertor_loss = finite_loss(
            kl.detach() + cfg.margin_weight * kl_reencoded + data_terms, "lmvae", step, "convertor loss"
        )
        convertor_params = list(model.convertor.parameters())
        for parameter, gradient in zip(convertor_params, torch.autograd.grad(convertor_loss, convertor_params)):
            parameter.grad = gradient
        convertor_optimizer.step()
        return {
            "encoder_loss": encoder_loss.item(),
            "convertor_loss": convertor_loss.item(),
            "kl": kl.item(),
            "kl_converted": kl_converted.mean().item(),
            "data": data_terms.item(),
        }

    @torch.no_grad()
    def _measure_rule(self, batch, batches: int, generator: torch.Generator) -> dict[str, float]:
        """What the trained rule carries, averaged over `batches` fresh base-class batches (per image).

        kl_z: KL(q(z | x, q) || N(0, I)) in nats; kl_zr: the same for the converted images
        re-encoded, KL(z_r); conversion_gain: L_CON(x, Con(0, q)) - L_CON(x, Con(mu, q)) in nats,
        what the posterior mean mu explains of x beyond the prior's mean rule; sample_spread: the
        pixel MSE between two conversions of one condition by two rules drawn from N(0, I) (0 when
        the convertor ignores z); pair_mse: the pixel MSE between x and q, the spread of the class.
        """
        model, totals = self.model, {}
        for _ in range(batches):
            x, condition = batch()
            mean, logvar = model.encode(x, condition)
            converted = torch.sigmoid(model.convert_logits(reparameterise(mean, logvar, generator), condition))
            prior_rules = [torch.randn(mean.shape, generator=generator).to(self.device) for _ in range(2)]
            first, second = (torch.sigmoid(model.convert_logits(z, condition)) for z in prior_rules)
            terms = {
                "kl_z": gaussian_kl(mean, logvar).mean(),
                "kl_zr": gaussian_kl(*model.encode(converted, condition)).mean(),
                "conversion_gain": model.observation.loss(model.convert_logits(torch.zeros_like(mean), condition), x)
                - model.observation.loss(model.convert_logits(mean, condition), x),
                "sample_spread": (first - second).pow(2).mean(),
                "pair_mse": (x - condition).pow(2).mean(),
            }
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value.item() / batches
        return totals

    def _reptile(self, batch, budget: VCEBudget, generator: torch.Generator) -> dict:
        """Algorithm 2: inner Adam steps on a copy with the VAE loss, then move the weights towards the copy."""
        cfg = self.config
        fast = copy.deepcopy(self.model)

        def inner_loop(iteration: int) -> dict[str, float]:
            inner = torch.optim.Adam(fast.parameters(), lr=cfg.reptile_inner_lr, betas=(0.0, 0.999))
            x, condition = batch()  # one class and one condition per task (Algorithm 2)
            for step in range(budget.reptile_inner_steps):
                terms = self._vae_step(fast, x, condition, inner, generator, "reptile", step)
            return {"loss": terms["loss"]}

        network = MetaNetwork(self.model, fast, torch.optim.SGD(self.model.parameters(), lr=cfg.reptile_step_size))
        return reptile([network], inner_loop, budget.reptile_iterations, phase="reptile", reporter=self.reporter)

    def adapt_to_support(self, task: FewShotTask, budget: VCEBudget, generator: torch.Generator) -> None:
        """No training on the new class (the paper's one-shot transfer): keep its support images as conditions."""
        self.conditions = task.support.clone()
        self.training_log["adapt"] = f"no training: {len(self.conditions)} support images kept as conditions"

    # -- sampling and capabilities ---------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim + 1

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        rule = torch.randn(n, self.model.latent_dim, generator=generator)
        index = torch.randint(len(self.conditions), (n, 1), generator=generator).float()
        return torch.cat([rule, index], 1)

    def latent_prior(self) -> LatentPrior:
        """`sample_latent`'s distribution for AIS: one component per condition (equal weights), the rule N(0, I)."""
        conditions = len(self.conditions)

        def to_latent(u: torch.Tensor, condition: int) -> torch.Tensor:
            return torch.cat([u, torch.full((len(u), 1), float(condition), dtype=u.dtype)], 1)

        return LatentPrior(
            self.model.latent_dim,
            torch.full((conditions,), -math.log(conditions), dtype=torch.float64),
            to_latent,
            f"N(0, I_{self.model.latent_dim}) rule x uniform choice of {conditions} support conditions",
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # Differentiable in the rule; the condition index is discrete (rounded, no gradient).
        z = z.to(self.device)
        index = z[:, -1].detach().round().long().clamp(0, len(self.conditions) - 1).cpu()
        condition = self.conditions[index].to(self.device)
        return torch.sigmoid(self.model.convert_logits(z[:, :-1], condition)).cpu()

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, num_samples: int = 1000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """log p(x) = log (1/k) sum_j p(x | s_j) in nats per image, (n,) float64 on the CPU (module docstring).

        `x` is made the observation first (binarised or 8-bit); each of the k conditions gets max(1, num_samples // k)
        importance samples; noise only from the CPU `generator` (default: seeded with 0).
        """
        generator = generator if generator is not None else make_generator(0)
        model, k = self.model, len(self.conditions)
        per_condition = max(1, num_samples // k)
        x = model.observation.observe(x.float()).to(self.device)
        was_training = model.training
        model.eval()
        try:
            estimates = []
            for condition in self.conditions.to(self.device):

                def rows(images: torch.Tensor, condition=condition) -> torch.Tensor:
                    return condition.expand(images.shape[0], *condition.shape)

                estimates.append(
                    iwae_log_likelihood(
                        x,
                        lambda xb, rows=rows: model.encode(xb, rows(xb)),
                        lambda x_rows, z, rows=rows: model.observation.log_prob(
                            model.convert_logits(z, rows(x_rows)), x_rows
                        ),
                        per_condition,
                        generator,
                        batch_size=self.likelihood_batch_size,
                        chunk_size=self.likelihood_chunk_size,
                    )
                )
            return torch.logsumexp(torch.stack(estimates), 0) - math.log(k)
        finally:
            model.train(was_training)
