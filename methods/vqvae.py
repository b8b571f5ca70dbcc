"""VQ-VAE with a learned autoregressive (PixelCNN) prior: pretrain on the base classes, fine-tune on the augmented support set.

van den Oord, Vinyals and Kavukcuoglu, Neural Discrete Representation Learning, NeurIPS 2017.
The prior is a gated PixelCNN (van den Oord et al., Conditional Image Generation with PixelCNN
Decoders, NeurIPS 2016) over the code map, trained after the VQ-VAE, as in the paper.

Model. An encoder (two 4x4 stride-2 convolutions and residual blocks "ReLU, 3x3 conv, ReLU, 1x1
conv", the paper's layout) maps an image (C, H, W) to z_e, an (H/4, W/4) map of
`embedding_dim`-vectors (7x7 for 28x28, 8x8 for CIFAR-10's 32x32). Each vector is replaced by its
nearest codebook vector e_c (vector quantisation, c the code index); the decoder mirrors the
encoder and outputs Bernoulli logits. Training loss per image (nats; squared norms summed over
the map, batch mean), the paper's Eq. 3:

    -log p(x | z_q) + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2,     beta = `commitment` (0.25),

with the straight-through estimator (the decoder's gradient at z_q is copied to z_e). With
`codebook_update="ema"` the codebook term is dropped and the codebook follows exponential moving
averages of its assigned encoder outputs (the paper's appendix A.1, decay 0.99). The prior
p(c) = prod_i p(c_i | c_<i) (raster order) is a gated PixelCNN: a vertical
stack (rows above) and a horizontal stack (left in the row), first layer of type A (excludes the
current position), the rest of type B; the masks are realised as cropped kernels (the zero half of
a masked kernel is never computed), and the depth is checked to cover the whole code map (no
blind spot). Samples: c ~ p(c) by ancestral sampling, position by position, with the CPU
generator; the image is the decoder's mean sigmoid(decoder(e_c)).

Protocol (capability `transfer`, as `vae`): `pretrain` trains the VQ-VAE on the base images,
then the prior on their code maps; `adapt` augments the k support images to a pool
(`bench.sdk.augment`), fine-tunes the VQ-VAE on it, re-encodes the pool and fine-tunes the prior.
Without base images (the unconditional protocol) pretraining is skipped and `adapt` trains from
scratch.

Latent space (capability `latent`): z is the quantised map e_c flattened (embedding_dim * H/4 *
W/4 numbers); `sample_latent` draws c from the prior and looks up e_c; `decode(z)` is the decoder
WITHOUT re-quantising, so it is differentiable in z. LPIPS backtracking optimises z through it
and may therefore leave the codebook lattice: a backtracked z is a point of the decoder's
continuous input space, not necessarily a code map the prior can sample.

Observation model and log-likelihood (capability `log_likelihood`): `methods._vae.observation_for`,
as `vae` (Bernoulli(sigmoid(decoder)) on BINARISED grey images x_bin = (x > 0.5), trained with
the cross-entropy on the continuous values; a discretised logistic on the 8-bit values of colour
images), the observation of the `nll` metric. log p(x) = log sum_c p(x|c) p(c)
is estimated by importance sampling over discrete code maps,

    log p(x) ~= logsumexp_k [log p(x|c_k) + log p(c_k) - log q(c_k|x)] - log K,   c_k ~ q(c|x),

with the proposal q(c|x) = prod_i softmax_j(-||z_e(x)_i - e_j||^2 / tau) (tau =
`proposal_temperature`; tau = 0 is the deterministic nearest-code bound log p(x|c*) + log p(c*)).
It is a stochastic lower bound on log p(x) (its expectation increases with K), so the reported
NLL is an upper bound: `bench.sdk.likelihood.discrete_importance_log_likelihood`, the estimator of
`iwae_log_likelihood` for a latent of categorical variables.

The residual block and the vector quantiser are `methods/_nets.py`'s (`ResidualBlock` in its
VQ-VAE form, `VectorQuantiser` with uniform initialisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.likelihood import discrete_importance_log_likelihood
from bench.sdk.method import Method, PretrainThenAdapt, SamplesFromLatent
from bench.sdk.task import FewShotTask
from bench.sdk.training import make_generator, minibatches, optimise, seeded_init
from methods import register
from methods._nets import Quantised, ResidualBlock, VectorQuantiser
from methods._vae import ObservedModel, observation_for


@dataclass
class VQVAEConfig:
    codebook_size: int = 64  # K codes
    embedding_dim: int = 32  # D, the size of each code vector
    width: int = 32  # channels of the first conv; the (H/4, W/4) stage has twice as many
    residual_blocks: int = 1  # per side, at the (H/4, W/4) resolution
    commitment: float = 0.25  # beta of the commitment loss (the paper's value)
    # "loss" (the codebook term of Eq. 3) or "ema" (moving averages). Measured over 800 base steps:
    # both end with ~59 of 64 codes in use per batch and all 64 on the data, without restarting dead
    # codes (so none is done); initialising the codes from encoder outputs did not speed this up.
    codebook_update: str = "ema"
    ema_decay: float = 0.99
    prior_channels: int = 32
    prior_layers: int = 5  # gated layers: one type A, then type B
    prior_first_kernel: int = 7  # odd; later layers use 3x3
    batch_size: int = 64  # images per VQ-VAE step
    prior_batch_size: int = 64  # code maps per prior step
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    prior_pretrain_lr: float = 1e-3
    prior_finetune_lr: float = 1e-3
    # tau of the log-likelihood proposal q(c|x) (0: the deterministic nearest-code bound). Measured
    # on a `quick` model, held-out ankle boots (mean log p(x), nats; 300 images at K = 100 / 100
    # images at K = 1000): tau 0: -213.8; 0.1: -191.8; 0.25: -182.1 / -173.2; 0.35: -180.0 / -171.2;
    # 0.5: -182.3 / -172.6; 1: -207.1; 2: -267.6. 0.35 gives the tightest bound.
    proposal_temperature: float = 0.35
    augment: AugmentConfig = AugmentConfig()


@dataclass(frozen=True)
class VQVAEBudget:
    pretrain_steps: int  # VQ-VAE optimiser steps on the base classes
    prior_pretrain_steps: int  # prior optimiser steps on the base classes' code maps
    finetune_steps: int  # VQ-VAE optimiser steps on the augmented support pool
    prior_finetune_steps: int  # prior optimiser steps on the pool's code maps
    pool_size: int  # support images after augmentation


# -- the VQ-VAE ----------------------------------------------------------------------------------
def paper_residual_block(channels: int) -> ResidualBlock:
    """The paper's residual block: x + conv1x1(ReLU(conv3x3(ReLU(x))))."""
    return ResidualBlock(channels, channels, norm="none", activation="relu", second_kernel=1)


class ConvVQVAE(ObservedModel):
    """Encoder to an (H/4, W/4) map of D-vectors, vector quantiser, mirror decoder to the observation's logits."""

    def __init__(self, image_shape: tuple[int, int, int], config: VQVAEConfig):
        super().__init__()
        channels, height, width_px = image_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"ConvVQVAE needs image sides divisible by 4, got {height}x{width_px}")
        self.map_shape = (height // 4, width_px // 4)
        w, d = config.width, config.embedding_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            *[paper_residual_block(2 * w) for _ in range(config.residual_blocks)],
            nn.ReLU(),
            nn.Conv2d(2 * w, d, 1),
        )
        self.quantiser = VectorQuantiser(config.codebook_size, d, config.codebook_update, config.ema_decay)
        self.decoder = nn.Sequential(
            nn.Conv2d(d, 2 * w, 3, 1, 1),
            *[paper_residual_block(2 * w) for _ in range(config.residual_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )
        self.observation = observation_for(image_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e: (n, D, H/4, W/4)."""
        return self.encoder(x)

    def quantise(self, z_e: torch.Tensor) -> Quantised:
        """Each D-vector of the map z_e (n, D, h, w) quantised; z_q (n, D, h, w), codes (n, h, w)."""
        out = self.quantiser(z_e.permute(0, 2, 3, 1))
        return out._replace(z_q=out.z_q.permute(0, 3, 1, 2))

    def code_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distances of each vector of z_e(x) to each code: (n, H/4, W/4, K)."""
        return self.quantiser.distances(self.encode(x).permute(0, 2, 3, 1))

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest-code indices of x: (n, H/4, W/4) int64."""
        return self.code_distances(x).argmin(-1)

    def code_map(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices (n, h, w) -> the quantised map e_c (n, D, h, w)."""
        return self.quantiser.lookup(codes).permute(0, 3, 1, 2)

    def decode_logits(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)


def vqvae_loss(model: ConvVQVAE, x: torch.Tensor, commitment: float) -> dict[str, torch.Tensor]:
    """Eq. 3 of the paper, per image (batch mean), plus codebook-usage diagnostics (not optimised)."""
    out = model.quantise(model.encode(x))
    reconstruction = model.observation.loss(model.decode_logits(out.z_q), x)
    usage = torch.bincount(out.codes.reshape(-1), minlength=model.quantiser.size).to(x.dtype)
    p = usage / usage.sum()
    perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {
        "loss": reconstruction + out.codebook_loss + commitment * out.commitment_loss,
        "reconstruction": reconstruction,
        "codebook": out.codebook_loss,
        "commitment": out.commitment_loss,
        "perplexity": perplexity,  # exp(entropy) of the batch's code usage: the effective number of codes
        "codes_used": (usage > 0).sum().to(x.dtype),
    }


# -- the gated PixelCNN prior ----------------------------------------------------------------------
def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row i takes row i - 1 (zeros in row 0): the vertical stack's rows <= i become rows < i."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for x = [a, b] along channels; tanh(a) is computed as 2 sigmoid(2a) - 1
    (the same function), measured about twice as fast as torch.tanh on this CPU."""
    a, b = x.chunk(2, dim=1)
    return (2 * torch.sigmoid(2 * a) - 1) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer (van den Oord et al. 2016, Fig. 2) with masks as cropped kernels.

    Vertical stack: a (k//2 + 1, k) kernel over rows i - k//2 .. i (the mask "rows <= centre").
    Horizontal stack: a (1, k//2 + 1) kernel over columns j - k//2 .. j (type B, "columns <=
    centre"); type A sees columns j - k//2 - 1 .. j - 1 (its input shifted right by one). The
    vertical features reach the horizontal stack shifted down by one row, so the output at (i, j)
    depends only on codes before (i, j) in raster order. The first (type A) layer has no residual
    connection, which would pass the current code through.
    """

    def __init__(self, channels: int, kernel: int, mask_type: str):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"PixelCNN kernels must be odd, got {kernel}")
        self.half, self.mask_type = kernel // 2, mask_type
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.half + 1, kernel))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.half + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.half
        v_pre = self.vertical(F.pad(v, (k, k, k, 0)))
        if self.mask_type == "A":
            h_in = F.pad(h, (k + 1, 0))[..., :-1]
        else:
            h_in = F.pad(h, (k, 0))
        h_pre = self.horizontal(h_in) + self.vertical_to_horizontal(shift_down(v_pre))
        h_new = self.horizontal_out(gate(h_pre))
        return gate(v_pre), h_new if self.mask_type == "A" else h + h_new


class PixelCNNPrior(nn.Module):
    """p(c) = prod_i p(c_i | c_<i) over an (h, w) map of code indices, raster order."""

    def __init__(self, codebook_size: int, map_shape: tuple[int, int], channels: int, layers: int, first_kernel: int):
        super().__init__()
        # Each layer widens the vertical stack by one column to each side and one row up, and the
        # horizontal stack by one column to the left: the last position sees the whole map when
        # first_kernel // 2 + layers - 1 >= max(w - 1, h - 2) (tested: no blind spot).
        needed = max(map_shape[1] - 1, map_shape[0] - 2, 0)
        if layers < 1 or first_kernel // 2 + layers - 1 < needed:
            raise ValueError(
                f"a PixelCNN of {layers} layers (first kernel {first_kernel}) does not cover a {map_shape[0]}x{map_shape[1]} "
                f"code map: first_kernel // 2 + layers - 1 must be at least {needed}"
            )
        self.codebook_size, self.map_shape = codebook_size, map_shape
        self.embedding = nn.Embedding(codebook_size, channels)
        self.layers = nn.ModuleList(
            [GatedLayer(channels, first_kernel, "A")] + [GatedLayer(channels, 3, "B") for _ in range(layers - 1)]
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, codebook_size, 1)
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (n, h, w) int64 -> logits (n, K, h, w); logits at (i, j) depend only on codes before (i, j)."""
        v = h = self.embedding(codes).permute(0, 3, 1, 2)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) per code map (n, h, w) -> (n,), in the model's dtype."""
        log_p = F.log_softmax(self(codes), dim=1)
        return log_p.gather(1, codes[:, None]).flatten(1).sum(1)

    def loss(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative log-likelihood of the code maps, nats per map (batch mean)."""
        nll = -self.log_prob(codes).mean()
        return {"loss": nll, "nll": nll}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """n code maps by ancestral sampling in raster order; one multinomial draw per position on the CPU generator.

        The logits of row i depend only on rows <= i, so each pass runs on those rows alone.
        """
        height, width = self.map_shape
        codes = torch.zeros(n, height, width, dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                probs = F.softmax(self(codes[:, : i + 1])[:, :, i, j].float(), dim=1).cpu()
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
        return codes


# -- the method ----------------------------------------------------------------------------------
@register
class VQVAE(PretrainThenAdapt, SamplesFromLatent, Method):
    title = "VQ-VAE with a PixelCNN prior (pretrain on base classes, fine-tune on augmented support)"
    reference = "van den Oord, Vinyals and Kavukcuoglu, Neural Discrete Representation Learning, NeurIPS 2017"
    # 2: colour images are modelled by a discretised logistic (grey-scale ones as in 1).
    version = "2"
    Config = VQVAEConfig
    Budget = VQVAEBudget
    profiles = {
        "smoke": VQVAEBudget(
            pretrain_steps=20, prior_pretrain_steps=20, finetune_steps=10, prior_finetune_steps=10, pool_size=32
        ),
        "quick": VQVAEBudget(
            pretrain_steps=500, prior_pretrain_steps=300, finetune_steps=100, prior_finetune_steps=100, pool_size=300
        ),
        # 10 epochs for the VQ-VAE (about 60 ms per step at one thread) and 10 for the prior (about 85 ms):
        # 20 minutes of pretraining; the paper profile's fine-tuning (docs/methods.md#standard).
        "standard": VQVAEBudget(
            pretrain_steps=8440,
            prior_pretrain_steps=8440,
            finetune_steps=300,
            prior_finetune_steps=100,
            pool_size=300,
        ),
        # Pretraining: the transfer protocol of the FIGR report, as `vae`: 20 epochs of the 54,000
        # base images at batch 64 (16,880 steps), for the VQ-VAE and again for the prior (the VQ-VAE
        # paper's 250k steps at batch 128 are for ImageNet-scale data, not 54,000 28x28 images).
        # Fine-tuning is kept short on purpose: the pool is 4 images augmented to 300, and measured
        # at quick scale, 50 / 100 / 200 prior steps (lr 1e-3) give class consistency 0.88 / 0.94 /
        # 0.99 but held-out NLL 163 / 179 / 248 nats (the prior memorises the support code maps).
        # These fine-tuning lengths are the quick measurements, not re-measured at paper scale.
        "paper": VQVAEBudget(
            pretrain_steps=16880,
            prior_pretrain_steps=16880,
            finetune_steps=300,
            prior_finetune_steps=100,
            pool_size=300,
        ),
    }
    capabilities = frozenset({"latent", "log_likelihood", "reconstruct", "embed", "transfer"})
    likelihood_description = (
        "marginal of the sampling model, sum over code maps c of p(x|c) p(c) (PixelCNN prior), estimated by importance "
        "sampling over c with q(c|x) = prod_i softmax(-||z_e(x)_i - e_j||^2 / tau): a stochastic lower bound"
    )
    # Images per proposal pass and (image, code map) pairs per decoder + prior pass in log_likelihood.
    likelihood_batch_size: int = 16
    likelihood_chunk_size: int = 2048

    def pretrain_on_base(self, task: FewShotTask, budget: VQVAEBudget, seed: int, generator: torch.Generator) -> None:
        """Train the VQ-VAE, then the prior, on the base classes."""
        cfg = self.config
        with seeded_init(seed):
            self.model = ConvVQVAE(task.image_shape, cfg).to(self.device)
            self.prior = PixelCNNPrior(
                cfg.codebook_size, self.model.map_shape, cfg.prior_channels, cfg.prior_layers, cfg.prior_first_kernel
            ).to(self.device)
        if len(task.base_images):
            with self.phase("pretrain"):
                self._train_vqvae(task.base_images, budget.pretrain_steps, cfg.pretrain_lr, "pretrain", generator)
            with self.phase("pretrain_prior"):
                self._train_prior(
                    task.base_images, budget.prior_pretrain_steps, cfg.prior_pretrain_lr, "pretrain_prior", generator
                )
        else:  # the unconditional protocol has no base set: train from scratch on the support set
            self.training_log["pretrain"] = "skipped: the task has no base images"

    def adapt_to_support(self, task: FewShotTask, budget: VQVAEBudget, generator: torch.Generator) -> None:
        """Fine-tune the VQ-VAE on the augmented support set, then the prior on the pool's code maps."""
        cfg = self.config
        with self.phase("augment"):
            pool = augment(task.support, budget.pool_size, generator, cfg.augment, task.allows_hflip)
        with self.phase("finetune"):
            self._train_vqvae(pool, budget.finetune_steps, cfg.finetune_lr, "finetune", generator)
        with self.phase("finetune_prior"):
            self._train_prior(pool, budget.prior_finetune_steps, cfg.prior_finetune_lr, "finetune_prior", generator)
        self.model.eval()
        self.prior.eval()

    def _train_vqvae(self, images: torch.Tensor, steps: int, lr: float, phase: str, generator: torch.Generator) -> None:
        cfg = self.config
        self.model.train()
        batches = minibatches(images, cfg.batch_size, generator)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.training_log[phase] = optimise(
            lambda step: vqvae_loss(self.model, next(batches).to(self.device), cfg.commitment),
            optimizer,
            steps,
            phase=phase,
            reporter=self.reporter,
            curve_points=200,
        )
        self.model.eval()

    def _train_prior(self, images: torch.Tensor, steps: int, lr: float, phase: str, generator: torch.Generator) -> None:
        """Fit the prior to the code maps of `images` under the current (frozen) VQ-VAE.

        Each minibatch is encoded when it is drawn (in eval mode, without gradients): cheaper than
        encoding the whole base set first when the budget sees fewer images than it holds.
        """
        self.model.eval()
        self.prior.train()
        batches = minibatches(images, self.config.prior_batch_size, generator)
        optimizer = torch.optim.Adam(self.prior.parameters(), lr=lr)
        seen = torch.zeros(self.config.codebook_size, dtype=torch.bool)

        def loss_fn(step: int) -> dict[str, torch.Tensor]:
            codes = self.model.codes(next(batches).to(self.device))
            seen[codes.unique().cpu()] = True
            return self.prior.loss(codes)

        self.training_log[phase] = optimise(
            loss_fn, optimizer, steps, phase=phase, reporter=self.reporter, curve_points=200
        )
        # How many codes the VQ-VAE used on the images this phase drew (dead codes are the known failure).
        self.training_log[phase]["codes_used_on_data"] = int(seen.sum())
        self.prior.eval()

    @torch.no_grad()
    def _codes_of(self, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """Nearest-code maps (n, h, w) int64 on the CPU, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            return torch.cat([self.model.codes(chunk.to(self.device)).cpu() for chunk in images.split(batch)])
        finally:
            self.model.train(was_training)

    # -- sampling and capabilities -----------------------------------------------------
    @property
    def latent_dim(self) -> int:
        height, width = self.model.map_shape
        return self.config.embedding_dim * height * width

    def sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n code maps (n, h, w) from the prior, in chunks of `sample_batch_size`."""
        chunks = [self.prior.sample(m, generator, self.device) for m in _chunk_sizes(n, self.sample_batch_size)]
        return (
            torch.cat(chunks) if chunks else torch.zeros(0, *self.model.map_shape, dtype=torch.long, device=self.device)
        )

    @torch.no_grad()
    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Prior sample -> codebook lookup -> flattened (n, latent_dim), on the CPU."""
        return self.model.code_map(self.sample_codes(n, generator)).flatten(1).cpu()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # No re-quantisation: differentiable in z (LPIPS backtracking optimises z through it).
        z_q = z.to(self.device).view(-1, self.config.embedding_dim, *self.model.map_shape)
        return torch.sigmoid(self.model.decode_logits(z_q)).cpu()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model.code_map(self._codes_of(x).to(self.device)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised map e_c(x) flattened: the image's point in the latent space of `decode`."""
        return self.model.code_map(self._codes_of(x).to(self.device)).flatten(1).cpu()

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        num_samples: int = 1000,
        generator: torch.Generator | None = None,
        *,
        return_ess: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Importance-sampled estimate of log p(x) in nats per image, (n,) float64 on the CPU.

        Observation model: `observation_for`'s on x made its observation here (binarised grey, 8-bit
        colour; a no-op on what `nll` passes); p(c) the PixelCNN prior. The estimate, a stochastic lower bound on
        log p(x) (so NLL is an upper bound), is

            logsumexp_k [log p(x|c_k) + log p(c_k) - log q(c_k|x)] - log K,

        c_k ~ q(c|x) = prod_i softmax_j(-||z_e(x)_i - e_j||^2 / tau), tau = `proposal_temperature`;
        tau = 0 gives the deterministic bound log p(x|c*) + log p(c*) at the nearest codes c*
        (then `num_samples` is irrelevant and no noise is drawn). Noise only from the CPU
        `generator` (default: seeded with 0); both networks run in eval mode, which is restored.
        """
        generator = generator if generator is not None else make_generator(0)
        tau = self.config.proposal_temperature
        if tau < 0:
            raise ValueError(f"proposal_temperature must be >= 0, got {tau}")
        model, prior = self.model, self.prior
        modes = (model.training, prior.training)
        model.eval()
        prior.eval()

        def proposal_log_probs(xb: torch.Tensor) -> torch.Tensor:
            distances = model.code_distances(xb).flatten(1, 2).double()  # (b, P, K)
            if tau == 0:
                nearest = F.one_hot(distances.argmin(-1), distances.shape[-1]).bool()
                return torch.zeros_like(distances).masked_fill_(~nearest, -math.inf)
            return F.log_softmax(-distances / tau, dim=-1)

        def log_joint(x_rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            code_map = codes.view(-1, *model.map_shape)
            log_lik = model.observation.log_prob(model.decode_logits(model.code_map(code_map)), x_rows)
            return log_lik.double() + prior.log_prob(code_map).double()

        try:
            return discrete_importance_log_likelihood(
                model.observation.observe(x.float()).to(self.device),
                proposal_log_probs,
                log_joint,
                1 if tau == 0 else num_samples,
                generator,
                batch_size=self.likelihood_batch_size,
                chunk_size=self.likelihood_chunk_size,
                return_ess=return_ess,
            )
        finally:
            model.train(modes[0])
            prior.train(modes[1])


def _chunk_sizes(n: int, size: int) -> list[int]:
    return [min(size, n - start) for start in range(0, n, size)]
