"""CADA-VQ-VAE: a continuous image VAE and a vector-quantised semantic VAE, cross-aligned and meta-learned over episodes.

"Few-Shot Image Generation Using Cross-Aligned and Vector Quantized VAE with Meta-Learning"
(slides, `../shared/papers/cross-aligned-vq-vae-meta-learning.txt`), built on CADA-VAE:
Schönfeld, Ebrahimi, Sinha, Darrell and Akata, Generalized Zero- and Few-Shot Learning via
Aligned Variational Autoencoders, CVPR 2019 (cross- and distribution-alignment losses); van den
Oord, Vinyals and Kavukcuoglu, Neural Discrete Representation Learning, NeurIPS 2017 (the vector
quantiser, its codebook and commitment losses, the straight-through estimator); Nichol, Achiam
and Schulman, On First-Order Meta-Learning Algorithms, 2018 (Reptile, `bench.sdk.reptile`);
Snell, Swersky and Zemel, Prototypical Networks, NeurIPS 2017 (the contrastive term).

SIDE INFORMATION: besides the k support images, this method receives the novel class's one-sentence
description (e.g. "an ankle boot: a shoe whose shaft covers the ankle, with a thick sole and a low
heel"), embedded by `bench/sdk/semantics.py` (WordLlama, 256 dimensions, unit length). No other method
of the benchmark gets it; its scores are not a like-for-like comparison. The embedding's card
(model, package version, sha256 of weights and descriptions) is in the training log (`semantics`).

Model (the slides' `CADA_VAE(latent_size, num_embeddings, embedding_dim)`):
- ImageEncoder: two stride-2 convs (layer norm) -> 256 -> Gaussian q(z|x), mean and log-variance of latent_size;
- ImageDecoder: z -> 256 -> (2w, H/4, W/4) -> two stride-2 transposed convs -> the observation's logits (C = 1 or 3);
- SemanticEncoderVQVAE: class embedding s -> 256 -> z_e (latent_size), split into latent_size / embedding_dim
  chunks, each replaced by its nearest of num_embeddings codebook vectors (straight-through gradient);
  the quantised vector is the mean of q(z|s), a log-variance head gives its spread;
- SemanticDecoder: z -> 256 -> s.
Layer normalisation or none, never batch norm: Reptile averages weights, batch statistics do not survive it.

Loss per episode (images x with class labels y, class embeddings s_y), all in nats-comparable units:
1. image VAE: the observation's reconstruction loss of x given z_x ~ q(z|x) + kl_weight * KL(q(z|x) || N(0, I));
2. semantic VAE: semantic_weight * |s - D_s(z_s)|^2 + vq_weight * (codebook loss + commitment *
   commitment loss) + kl_weight * KL(q(z|s) || N(0, I)), per class of the episode;
3. cross-alignment (CADA-VAE): image decoded from the class's semantic sample, D_x(z_s), scored
   against x, plus semantic_weight * |s_y - D_s(z_x)|^2; times cross_alignment_weight;
4. distribution alignment: `mmd` (default; the slides credit MMD): per class of the episode, the
   unbiased MMD^2 (mixture of Gaussian kernels) between the image latent samples z_x and as many
   samples z_s of the class's semantic posterior; or `w2` (CADA-VAE): the 2-Wasserstein distance
   between each image posterior and its class's semantic posterior (closed form for diagonal
   Gaussians); times distribution_alignment_weight;
5. contrastive (prototypical): each class's prototype is the mean of its support images' latent means
   and its semantic mean; query latent means are classified by softmax over negative squared
   distances to the prototypes; cross-entropy times contrastive_weight.

Meta-learning (`pretrain`: the base images and the base classes' descriptions only): each episode
draws n_way base classes and support_per_class + query_per_class images of each (seeded); inner
loop: `inner_steps` Adam steps (fresh per episode) of the whole loss on a copy W of the
meta-weights Phi; outer: Reptile step Phi <- Phi + eps (W - Phi) (`bench.sdk.reptile`) with SGD, eps =
meta_lr linearly annealed to 0 (Nichol et al.'s schedule). `meta_learning=False` is the ablation
("standard training" in the slides): the same episodes and steps, one persistent Adam on the
weights themselves, no Reptile. The slides meta-train on 30 images of each base class
(`base_images_per_class`, a budget field: the `paper` profile's; `smoke` and `quick` use every base
image); the subset is drawn from the training seed before the first episode.

Adaptation (`adapt`): the support set is augmented to a pool (`bench.sdk.augment`), and the meta-weights
are fine-tuned on it with the novel class's description embedding: terms 1, 2 and 4 and the semantic
half of 3 (the contrastive term needs two classes and drops out). The image half of 3 is left out
(`adapt_cross_reconstruction`): with one class, z_s is drawn independently of the pool image it is
scored against, so that term is smallest when D_x decodes the pool's mean image from every semantic
latent, and the generative path then gives near-identical blurred boots (measured in docs/methods.md).

Sampling is the generative path (CADA-VAE's for an unseen class: latents from the semantic posterior
of its description, here decoded to images; the slides' text-guided synthesis):

    z ~ q(z|s_novel) = N(mu_s(s_novel), sigma_s(s_novel)^2),   samples sigmoid(D_x(z)).

The support images act through the adaptation only; the sampling distribution is not built from
them. `sampling="support-mixture"` is version 1's, kept as an ablation:

    p(z) = (1 - w) / k * sum_j N(z; mu_x(x_j), sigma_x(x_j)^2) + w * N(z; mu_s(s_novel), sigma_s(s_novel)^2),

with the posteriors of the k (unaugmented) support images, w = semantic_mixture_weight (default
1 / (k + 1)); a share 1 - w of its samples decode a support image's own posterior, near-copies of it.

What the slides leave open, and what was chosen:
- networks: CADA-VAE used MLPs on CNN features; here a DCGAN-sized conv VAE as `methods/vae.py`
  (layer norm instead of batch norm), MLPs on the semantic side;
- quantiser: chunks of the semantic latent (`VectorQuantiser` of `methods/_nets.py`), VQ-VAE's
  codebook and commitment losses (beta 0.25) scaled by vq_weight = 50, codebook initialised from
  N(0, I). With VQ-VAE's unscaled losses and its small initial codes, the straight-through
  gradients of the nats-sized image terms drove the encoder output z_e away from its codes
  (|z_e| 3 -> 39 in 120 episodes, codebook loss 1,800, measured);
- a Gaussian from a discrete code: a log-variance head around the quantised mean;
- loss weights, the MMD kernel, the episode shape (5-way, 5 + 5 images): `CADAVQVAEConfig`;
  the slides' "KL divergence term (= 2.0)" is kl_weight;
- meta-learner: Reptile (shared with FIGR); adaptation: fine-tuning on the augmented support pool
  with the description (the slides describe none); sampling: the semantic posterior above;
- text encoder: none named in the slides (CADA-VAE used class attribute vectors or word2vec); here
  the sentence embedding of a hand-written description.

Meta-learning, measured at the quick budget (version 1: the support mixture at w = 0.2, equal steps,
FID of 1,000 samples): Reptile
805 / 720 (seeds 0 / 1) against plain training 835 / 729; at 300 episodes + 300 adaptation steps
and w = 0, plain training was ahead (1,223 against 1,325). No consistent effect at this budget:
adaptation on the support pool does most of the work, as for FIGR (docs/methods.md).

Observation model and likelihood (capability `log_likelihood`): `methods._vae.observation_for`'s, as
`methods/vae.py` (Bernoulli(sigmoid(D_x(z))) on BINARISED grey images (x > 0.5), trained with the
cross-entropy on [0, 1] values; a discretised logistic on the 8-bit values of colour images). log p(x) is the IWAE estimate of `bench.sdk.likelihood` with the image encoder as proposal and,
as prior, the log-density of the sampling distribution (q(z|s_novel), or the support mixture): the
likelihood of the model the samples come from, conditional on the description (and, for the mixture,
on the support images).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.sdk.ais import LatentPrior
from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.likelihood import iwae_log_likelihood
from bench.sdk.method import Method, PretrainThenAdapt, SamplesFromLatent, TrainingDiverged
from bench.sdk.reptile import MetaNetwork, reptile
from bench.sdk.semantics import class_embeddings, embedding_card
from bench.sdk.task import FewShotTask
from bench.sdk.training import make_generator, minibatches, optimise, run_steps, seeded_init
from methods import register
from methods._nets import Quantised, VectorQuantiser
from methods._vae import ObservedModel, gaussian_kl, observation_for, reparameterise

_LOG_2PI = math.log(2 * math.pi)
SAMPLINGS = ("semantic", "support-mixture")  # values of `CADAVQVAEConfig.sampling`


@dataclass(frozen=True)
class CADAVQVAEConfig:
    # The slides' constructor CADA_VAE(latent_size, num_embeddings, embedding_dim).
    latent_size: int = 32
    num_embeddings: int = 64  # codebook size
    embedding_dim: int = 4  # each code quantises latent_size / embedding_dim = 8 chunks of the semantic latent
    width: int = 32  # channels of the first conv layer; the second has twice as many
    hidden: int = 256  # dense layer of every encoder and decoder
    kl_weight: float = 2.0  # the slides' "KL divergence term (= 2.0)"
    # |s - s_hat|^2 of a unit-length embedding is at most 4: scaled (a Gaussian of std 0.1 per
    # dimension) so that the semantic terms are not negligible next to ~250 nats of image.
    semantic_weight: float = 50.0
    commitment: float = 0.25  # VQ-VAE's beta
    vq_weight: float = 50.0  # scales codebook + commitment losses (squared latent distances) like the embedding's error
    cross_alignment_weight: float = 1.0
    distribution_alignment: str = "mmd"  # "mmd" (the slides) or "w2" (CADA-VAE)
    # MMD^2 is at most 2 (kernel values in [0, 1]); W2 is a distance in latent units, larger: about 10 suits it.
    distribution_alignment_weight: float = 100.0
    mmd_bandwidths: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)  # kernel widths, times the latent size
    contrastive_weight: float = 10.0
    # Episodes (meta-training tasks): n_way base classes, support + query images of each.
    n_way: int = 5
    support_per_class: int = 5
    query_per_class: int = 5
    inner_steps: int = 5  # K: Adam steps on one episode before the Reptile update
    inner_lr: float = 1e-3
    meta_lr: float = 1.0  # Reptile's outer step size eps, linearly annealed to 0 (Nichol et al.)
    meta_learning: bool = True  # False: the same episodes and steps, plain training (the ablation)
    adapt_lr: float = 1e-3
    adapt_cross_reconstruction: bool = False  # the image half of term 3 while adapting (why not: module docstring)
    batch_size: int = 64  # pool images per adaptation step
    sampling: str = "semantic"  # z ~ q(z|s_novel); "support-mixture": version 1's ablation (module docstring)
    semantic_mixture_weight: float | None = None  # support-mixture's w; None: 1 / (k + 1)
    augment: AugmentConfig = AugmentConfig()


@dataclass(frozen=True)
class CADAVQVAEBudget:
    episodes: int  # meta-training episodes (outer Reptile updates), each of `inner_steps` steps
    adapt_steps: int  # Adam steps on the augmented support pool
    pool_size: int  # support images after augmentation
    base_images_per_class: int | None = None  # meta-train on a seeded subset of this many per base class; None: all


# -- the networks ---------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """(n, C, H, W) -> mean and log-variance (n, latent_size) of q(z|x): two stride-2 convs and a dense layer."""

    def __init__(self, image_shape: tuple[int, int, int], latent_size: int, width: int = 32, hidden: int = 256):
        super().__init__()
        channels, height, width_px = image_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"cadavqvae needs image sides divisible by 4, got {height}x{width_px}")
        features = 2 * width * (height // 4) * (width_px // 4)
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.GroupNorm(1, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.LeakyReLU(0.2),
        )
        self.to_mean = nn.Linear(hidden, latent_size)
        self.to_logvar = nn.Linear(hidden, latent_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.to_mean(h), self.to_logvar(h).clamp(-10, 10)


class ImageDecoder(nn.Module):
    """(n, latent_size) -> the observation's logits (n, C, H, W): the mirror of the encoder."""

    def __init__(self, image_shape: tuple[int, int, int], latent_size: int, width: int = 32, hidden: int = 256):
        super().__init__()
        channels, height, width_px = image_shape
        self.feature_shape = (2 * width, height // 4, width_px // 4)
        self.project = nn.Sequential(
            nn.Linear(latent_size, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self.feature_shape)), nn.ReLU()
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.GroupNorm(1, width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, *self.feature_shape))


class SemanticPosterior(NamedTuple):
    mean: torch.Tensor  # (n, latent_size), the quantised code
    logvar: torch.Tensor
    quantised: Quantised


class SemanticEncoderVQVAE(nn.Module):
    """Class embedding (n, semantic_dim) -> Gaussian q(z|s) whose mean is vector-quantised."""

    def __init__(self, semantic_dim: int, latent_size: int, num_embeddings: int, embedding_dim: int, hidden: int = 256):
        super().__init__()
        if latent_size % embedding_dim:
            raise ValueError(f"latent_size ({latent_size}) must be a multiple of embedding_dim ({embedding_dim})")
        self.body = nn.Sequential(nn.Linear(semantic_dim, hidden), nn.LeakyReLU(0.2))
        self.to_latent = nn.Linear(hidden, latent_size)
        self.to_logvar = nn.Linear(hidden, latent_size)
        # Codes spread like the prior N(0, I) of the latent space they live in (why: the module docstring).
        self.quantiser = VectorQuantiser(num_embeddings, embedding_dim, update="loss", init="normal")
        self.embedding_dim = embedding_dim

    def forward(self, s: torch.Tensor) -> SemanticPosterior:
        """The latent (n, latent_size) is split into latent_size / embedding_dim chunks, each quantised."""
        h = self.body(s)
        z_e = self.to_latent(h)
        quantised = self.quantiser(z_e.view(z_e.shape[0], -1, self.embedding_dim))
        quantised = quantised._replace(z_q=quantised.z_q.reshape(z_e.shape[0], -1))
        return SemanticPosterior(quantised.z_q, self.to_logvar(h).clamp(-10, 10), quantised)


class SemanticDecoder(nn.Module):
    """(n, latent_size) -> reconstructed class embedding (n, semantic_dim)."""

    def __init__(self, latent_size: int, semantic_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_size, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, semantic_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class CADAVAE(ObservedModel):
    """The slides' `CADA_VAE(latent_size, num_embeddings, embedding_dim)`: the four networks, and the observation
    model of the images."""

    def __init__(self, image_shape: tuple[int, int, int], semantic_dim: int, cfg: CADAVQVAEConfig):
        super().__init__()
        self.image_encoder = ImageEncoder(image_shape, cfg.latent_size, cfg.width, cfg.hidden)
        self.image_decoder = ImageDecoder(image_shape, cfg.latent_size, cfg.width, cfg.hidden)
        self.semantic_encoder = SemanticEncoderVQVAE(
            semantic_dim, cfg.latent_size, cfg.num_embeddings, cfg.embedding_dim, cfg.hidden
        )
        self.semantic_decoder = SemanticDecoder(cfg.latent_size, semantic_dim, cfg.hidden)
        self.observation = observation_for(image_shape)


# -- the loss terms -------------------------------------------------------------------------------
def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between samples x (n, d) and y (m, d), n, m >= 2 (Gretton et al. 2012).

    Kernel: the mean over b in `bandwidths` of exp(-|a - c|^2 / (2 b d)), d the dimension (a
    unit-variance Gaussian in d dimensions has E|a - c|^2 = 2d, so b = 1 gives kernel values near e^-1).
    """
    d = x.shape[1]

    def kernel(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        squared = (a[:, None, :] - c[None, :, :]).pow(2).sum(-1)
        return torch.stack([torch.exp(-squared / (2 * b * d)) for b in bandwidths]).mean(0)

    n, m = x.shape[0], y.shape[0]
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kernel(x, y).mean()


def gaussian_w2(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """2-Wasserstein distance between diagonal Gaussians, row by row (CADA-VAE's distribution alignment):
    W2 = (|mu1 - mu2|^2 + |sigma1 - sigma2|^2)^(1/2)."""
    squared = (mean1 - mean2).pow(2).sum(-1) + (torch.exp(0.5 * logvar1) - torch.exp(0.5 * logvar2)).pow(2).sum(-1)
    return torch.sqrt(squared + 1e-12)  # the epsilon keeps the gradient finite at distance 0


def prototypical_loss(query: torch.Tensor, query_labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of classifying each query latent by softmax over negative squared distances to the prototypes."""
    logits = -(query[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)
    return F.cross_entropy(logits, query_labels)


def semantic_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the embedding's dimensions, mean over rows."""
    return (predicted - target).pow(2).sum(1).mean()


def cada_loss(
    model: CADAVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    cfg: CADAVQVAEConfig,
    generator: torch.Generator,
    support: torch.Tensor | None = None,
    cross_reconstruction: bool = True,
) -> dict[str, torch.Tensor]:
    """The five loss terms (module docstring) for images of the classes whose embeddings are the rows of `embeddings`.

    `labels` index those rows; `support` (bool per image) marks the images whose latents build the
    prototypes of the contrastive term, the others being its queries (None, or fewer than two
    classes: no contrastive term). Returns the total `loss`, each term's weighted contribution
    (the slides' loss components) and the raw image reconstruction.
    """
    mean_x, logvar_x = model.image_encoder(images)
    z_x = reparameterise(mean_x, logvar_x, generator)
    semantic = model.semantic_encoder(embeddings)
    z_s_class = reparameterise(semantic.mean, semantic.logvar, generator)
    mean_s, logvar_s = semantic.mean[labels], semantic.logvar[labels]
    z_s = reparameterise(mean_s, logvar_s, generator)  # one semantic sample per image, for its class

    reconstruction = model.observation.loss(model.image_decoder(z_x), images)
    image_vae = reconstruction + cfg.kl_weight * gaussian_kl(mean_x, logvar_x).mean()
    quantised = semantic.quantised
    semantic_vae = (
        cfg.semantic_weight * semantic_error(model.semantic_decoder(z_s_class), embeddings)
        + cfg.vq_weight * (quantised.codebook_loss + cfg.commitment * quantised.commitment_loss)
        + cfg.kl_weight * gaussian_kl(semantic.mean, semantic.logvar).mean()
    )
    cross_alignment = cfg.semantic_weight * semantic_error(model.semantic_decoder(z_x), embeddings[labels])
    if cross_reconstruction:
        cross_alignment = model.observation.loss(model.image_decoder(z_s), images) + cross_alignment
    classes = labels.unique()
    if cfg.distribution_alignment == "mmd":
        distribution_alignment = torch.stack(
            [mmd(z_x[labels == c], z_s[labels == c], cfg.mmd_bandwidths) for c in classes]
        ).mean()
    elif cfg.distribution_alignment == "w2":
        distribution_alignment = gaussian_w2(mean_x, logvar_x, mean_s, logvar_s).mean()
    else:
        raise ValueError(f"unknown distribution_alignment '{cfg.distribution_alignment}' (valid: mmd, w2)")
    contrastive = torch.zeros((), device=images.device)
    if support is not None and len(classes) >= 2:
        prototypes = torch.stack(
            [
                torch.cat([mean_x[support & (labels == c)], semantic.mean[c][None]]).mean(0)
                for c in range(len(embeddings))
            ]
        )
        contrastive = prototypical_loss(mean_x[~support], labels[~support], prototypes)

    terms = {
        "image_vae": image_vae,
        "semantic_vae": semantic_vae,
        "cross_alignment": cfg.cross_alignment_weight * cross_alignment,
        "distribution_alignment": cfg.distribution_alignment_weight * distribution_alignment,
        "contrastive": cfg.contrastive_weight * contrastive,
    }
    return {"loss": sum(terms.values()), **terms, "reconstruction": reconstruction}


def mixture_log_prob(
    z: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor
) -> torch.Tensor:
    """log sum_c w_c N(z; mean_c, diag(exp(logvar_c))) for z (m, d): (m,), in z's dtype."""
    means, logvars, log_w = means.to(z), logvars.to(z), weights.to(z).log()
    per_component = -0.5 * ((z[:, None, :] - means).pow(2) / logvars.exp() + logvars + _LOG_2PI).sum(-1)
    return torch.logsumexp(per_component + log_w, dim=1)


# -- the method -----------------------------------------------------------------------------------
@register
class CADAVQVAE(PretrainThenAdapt, SamplesFromLatent, Method):
    title = "CADA-VQ-VAE: cross-aligned image VAE and VQ semantic VAE, meta-learned with Reptile (uses the class description)"
    reference = (
        "Few-Shot Image Generation Using Cross-Aligned and Vector Quantized VAE with Meta-Learning (slides); "
        "Schönfeld et al., CADA-VAE, CVPR 2019"
    )
    # 2: samples from the semantic posterior (the generative path), not the support posteriors;
    # 3: colour images are modelled by a discretised logistic (grey-scale ones as in 2).
    version = "3"
    Config = CADAVQVAEConfig
    Budget = CADAVQVAEBudget
    profiles = {
        "smoke": CADAVQVAEBudget(episodes=3, adapt_steps=5, pool_size=32),
        # 64-103 ms per inner step (5-way, 5 + 5 images) and 55-70 ms per adaptation step (batch 64) on
        # one thread of the shared CPU: about 2 minutes of fitting, 3 for the whole quick run with its
        # evaluation (LPIPS backtracking takes 1 of them). Adaptation does most of the work at this budget
        # (docs/methods.md).
        "quick": CADAVQVAEBudget(episodes=150, adapt_steps=900, pool_size=300),
        # Meta-training on every base image (about 0.36 s per episode at one thread: 18 minutes), the
        # quick profile's adaptation (docs/methods.md#standard).
        "standard": CADAVQVAEBudget(episodes=3000, adapt_steps=900, pool_size=300),
        # The slides' meta-training: 30 images of each base class; they train for 75-100 epochs, and 100
        # epochs of the 9 x 30 = 270 images in episodes of 5 x (5 + 5) = 50 images is 540 episodes.
        # Adaptation: the quick profile's 900 steps (192 epochs of the 300-image pool at batch 64); the
        # slides give no adaptation budget.
        "paper": CADAVQVAEBudget(episodes=540, adapt_steps=900, pool_size=300, base_images_per_class=30),
    }
    capabilities = frozenset({"latent", "latent_prior", "log_likelihood", "reconstruct", "embed", "transfer"})
    needs_base_classes = True  # meta-trains on the base classes
    needs_class_descriptions = True  # and on their descriptions, as the novel class's is its sampling condition
    likelihood_batch_size: int = 64
    likelihood_chunk_size: int = 2048

    @property
    def likelihood_description(self) -> str:
        """What `nll` measures (its card's `model_likelihood`): the density of the model that samples."""
        if self.config.sampling == "support-mixture":
            return (
                "p(x) of the sampling model: z from the mixture of the support images' posteriors and the "
                "novel class description's semantic posterior (conditional on both), the observation model's decoder"
            )
        return (
            "p(x) of the sampling model: z from the semantic posterior q(z|s) of the novel class description "
            "(the generative path; the support set acts only through adaptation), the observation model's decoder"
        )

    # -- semantics ----------------------------------------------------------------------------
    def _semantics(self, task: FewShotTask) -> torch.Tensor:
        """The class-embedding table of the task's descriptions; the card goes into the training log."""
        table = class_embeddings(task.class_descriptions)
        self.training_log["semantics"] = embedding_card(task.class_descriptions)
        return table

    # -- meta-training (base classes only) --------------------------------------------------------
    def pretrain_on_base(
        self, task: FewShotTask, budget: CADAVQVAEBudget, seed: int, generator: torch.Generator
    ) -> None:
        cfg = self.config
        table = self._semantics(task)
        base_classes = task.base_labels.unique()
        if task.novel_class in base_classes.tolist():
            raise ValueError("the novel class appears among the base labels")
        per_episode = cfg.support_per_class + cfg.query_per_class
        if budget.base_images_per_class is not None and budget.base_images_per_class < per_episode:
            raise ValueError(
                f"base_images_per_class ({budget.base_images_per_class}) is below the {per_episode} images "
                "an episode draws from each class"
            )
        if len(base_classes) < cfg.n_way:
            raise ValueError(
                f"cadavqvae episodes need n_way = {cfg.n_way} base classes, the task has {len(base_classes)}"
            )
        with seeded_init(seed):
            self.model = CADAVAE(task.image_shape, table.shape[1], cfg).to(self.device)
        with self.phase("meta_train"):
            self.training_log["meta_train"] = self._meta_train(
                task, table, base_classes, budget.episodes, budget.base_images_per_class, generator
            )

    def episode(
        self, task: FewShotTask, members: dict[int, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One episode: n_way base classes, support_per_class + query_per_class images of each.

        Returns images (class-major), episode labels 0..n_way-1, the support mask and the dataset
        class of each episode label. Only classes in `members` (the base classes) are drawn.
        """
        cfg = self.config
        classes = torch.tensor(sorted(members))
        chosen = classes[torch.randperm(len(classes), generator=generator)[: cfg.n_way]]
        per_class = cfg.support_per_class + cfg.query_per_class
        indices = []
        for c in chosen.tolist():
            pool = members[c]
            indices.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]])
        images = task.base_images[torch.cat(indices)]
        labels = torch.arange(cfg.n_way).repeat_interleave(per_class)
        support = (torch.arange(per_class) < cfg.support_per_class).repeat(cfg.n_way)
        return images, labels, support, chosen

    def _meta_train(
        self,
        task: FewShotTask,
        table: torch.Tensor,
        base_classes: torch.Tensor,
        episodes: int,
        per_class: int | None,
        generator: torch.Generator,
    ) -> dict:
        """Reptile over episodes (each: `inner_steps` Adam steps of the whole loss on the copy W), or, for the
        `meta_learning=False` ablation, the same episodes and steps with one persistent Adam on the weights.

        `per_class`: the episodes draw from that many images of each base class (drawn first); None: from all."""
        cfg = self.config
        members = {int(c): torch.nonzero(task.base_labels == c).flatten() for c in base_classes}
        if per_class is not None:
            members = {
                c: pool[torch.randperm(len(pool), generator=generator)[:per_class]] for c, pool in members.items()
            }
        meta = self.model
        meta.train()

        def train_on_episode(index: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
            images, labels, support, chosen = self.episode(task, members, generator)
            images, labels, support = images.to(self.device), labels.to(self.device), support.to(self.device)
            embeddings = table[chosen].to(self.device)
            model.train()
            return optimise(
                lambda step: cada_loss(model, images, labels, embeddings, cfg, generator, support),
                optimizer,
                cfg.inner_steps,
                phase="inner loop",
            )

        if cfg.meta_learning:
            fast = copy.deepcopy(meta)

            def reptile_episode(index: int) -> dict[str, float]:  # a fresh inner Adam per episode
                return train_on_episode(index, fast, torch.optim.Adam(fast.parameters(), lr=cfg.inner_lr))

            network = MetaNetwork(meta, fast, torch.optim.SGD(meta.parameters(), lr=cfg.meta_lr))
            log = reptile([network], reptile_episode, episodes, anneal=True, reporter=self.reporter)
        else:
            plain_optimizer = torch.optim.Adam(meta.parameters(), lr=cfg.inner_lr)

            def plain_episode(index: int) -> dict[str, float]:
                try:
                    return train_on_episode(index, meta, plain_optimizer)
                except TrainingDiverged as exc:
                    raise TrainingDiverged(f"episode {index}: {exc}") from None

            log = run_steps(
                plain_episode, episodes, phase="train on episodes", reporter=self.reporter, curve_points=200
            )
        return {**log, "meta_learning": cfg.meta_learning, "base_images": sum(len(pool) for pool in members.values())}

    # -- adaptation to the novel class -------------------------------------------------------------
    def adapt_to_support(self, task: FewShotTask, budget: CADAVQVAEBudget, generator: torch.Generator) -> None:
        cfg = self.config
        if cfg.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling '{cfg.sampling}' (valid: {', '.join(SAMPLINGS)})")
        novel = self._semantics(task)[task.novel_class][None].to(self.device)
        with self.phase("augment"):
            pool = augment(task.support, budget.pool_size, generator, cfg.augment, task.allows_hflip)
        model = self.model
        model.train()
        batches = minibatches(pool, cfg.batch_size, generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.adapt_lr)

        def loss_fn(step: int) -> dict[str, torch.Tensor]:
            images = next(batches).to(self.device)
            labels = torch.zeros(len(images), dtype=torch.int64, device=self.device)
            return cada_loss(
                model, images, labels, novel, cfg, generator, cross_reconstruction=cfg.adapt_cross_reconstruction
            )

        with self.phase("adapt"):
            self.training_log["adapt"] = optimise(
                loss_fn, optimizer, budget.adapt_steps, phase="adapt", reporter=self.reporter, curve_points=200
            )
        model.eval()
        self._fix_sampling_distribution(task.support, novel)

    @torch.no_grad()
    def _fix_sampling_distribution(self, support: torch.Tensor, novel_embedding: torch.Tensor) -> None:
        """p(z), kept as a mixture of diagonal Gaussians: the semantic posterior q(z|s_novel) alone (`semantic`), or
        (`support-mixture`) the k support images' posteriors, (1 - w) / k each, and the semantic posterior, w."""
        semantic = self.model.semantic_encoder(novel_embedding)
        self.training_log["sampling"] = {
            "distribution": self.config.sampling,
            "semantic_code": semantic.quantised.codes[0].tolist(),
            "semantic_mean_norm": float(semantic.mean.norm()),
            "semantic_std_mean": float(torch.exp(0.5 * semantic.logvar).mean()),
        }
        if self.config.sampling == "semantic":
            self.mixture = {"weights": torch.ones(1), "means": semantic.mean.cpu(), "logvars": semantic.logvar.cpu()}
            return
        k = len(support)
        w = self.config.semantic_mixture_weight
        w = 1 / (k + 1) if w is None else w
        if not 0 <= w <= 1:
            raise ValueError(f"semantic_mixture_weight must be in [0, 1], got {w}")
        mean_x, logvar_x = self.model.image_encoder(support.to(self.device))
        means = torch.cat([mean_x, semantic.mean]).cpu()
        logvars = torch.cat([logvar_x, semantic.logvar]).cpu()
        weights = torch.cat([torch.full((k,), (1 - w) / k), torch.tensor([w])])
        keep = weights > 0  # a zero-weight component adds nothing to the density and is never drawn
        self.mixture = {"weights": weights[keep], "means": means[keep], "logvars": logvars[keep]}
        self.training_log["sampling"].update(
            semantic_weight=w, support_std_mean=float(torch.exp(0.5 * logvar_x).mean())
        )

    # -- sampling and capabilities ---------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.latent_size

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        mixture = self.mixture
        component = torch.multinomial(mixture["weights"], n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator)
        return mixture["means"][component] + torch.exp(0.5 * mixture["logvars"][component]) * eps

    def latent_prior(self) -> LatentPrior:
        """`sample_latent`'s mixture for AIS: component c is mean_c + std_c * u."""
        mixture = self.mixture
        means, stds = mixture["means"], torch.exp(0.5 * mixture["logvars"])
        weights = mixture["weights"].double()
        return LatentPrior(
            self.latent_dim,
            torch.log(weights / weights.sum()),
            lambda u, component: means[component] + stds[component] * u,
            f"mixture of {len(weights)} diagonal Gaussians in {self.latent_dim} dimensions ({self.config.sampling} sampling)",
        )

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of the sampling mixture, (m, d) -> (m,), in z's dtype (float64 in the IWAE estimator)."""
        mixture = self.mixture
        return mixture_log_prob(z.cpu(), mixture["weights"], mixture["means"], mixture["logvars"])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # Differentiable in z: LPIPS backtracking optimises latents through it.
        return torch.sigmoid(self.model.image_decoder(z.to(self.device))).cpu()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.model.image_encoder(x.to(self.device))
        return self.decode(mean)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.image_encoder(x.to(self.device))[0].cpu()

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, num_samples: int = 1000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """IWAE estimate of log p(x) in nats per image, (n,) float64 on the CPU, under the sampling model.

        `x` (n, C, H, W) in [0, 1] is made the observation (binarised or 8-bit); proposal: the image encoder; prior: the
        sampling mixture (`log_prior`); noise only from the CPU `generator` (default seeded with 0).
        """
        generator = generator if generator is not None else make_generator(0)
        model = self.model
        was_training = model.training
        model.eval()
        try:
            return iwae_log_likelihood(
                model.observation.observe(x.float()).to(self.device),
                model.image_encoder,
                lambda x_rows, z: model.observation.log_prob(model.image_decoder(z), x_rows),
                num_samples,
                generator,
                log_prior=self.log_prior,
                batch_size=self.likelihood_batch_size,
                chunk_size=self.likelihood_chunk_size,
            )
        finally:
            model.train(was_training)
