"""Implicit Maximum Likelihood Estimation: the core the three IMLE variants share.

IMLE (Li and Malik, 2018) trains a generator G without a discriminator. Each round it draws a
shared pool of m latent codes, generates their images, and for every training image x_i selects
a latent code z_i whose sample is its nearest neighbour; then it takes optimiser steps that pull
G(z_i) towards x_i. Every training image gets a sample pulled towards it, so no mode is dropped.

The variants differ only in the selection (`IMLEMethod.select`):
- `imle`: every example takes the nearest sample of the new pool, every round;
- `adaimle` (Adaptive IMLE): per-example thresholds, an example re-selects only when the new pool
  has a sample within its threshold, which then tightens (a curriculum at each example's pace);
- `rsimle` (Rejection-Sampling IMLE): each training image's nearest pool samples closer than epsilon are
  rejected before the selection, so the selected codes follow the test-time prior.

Distances (`IMLEBudget.matching`): at `paper` the perceptual distance of `methods/_perceptual.py`,
LPIPS's form on a classifier of the base classes plus 0.1 x the per-pixel squared difference, as the
papers match in LPIPS (+ L2); below it `pixel`, the mean squared difference per pixel of [0, 1] images
(the small matching network trainable here left most samples as pixel noise: a named deviation). Never the
domain evaluator's features: the evaluator has seen the novel class and is the ruler every method
is scored with. The nearest-neighbour search is one chunked matrix product per round
(`pairwise_squared_distances`), its time is the phase `fit.nearest_neighbours`.

Every variant has the `transfer` capability: its base-class phase (`pretrain`) trains the matching
network (where the profile matches perceptually), and for the `-pretrained` entries also the generator (IMLE on the base images); the harness
runs it once per base set and training seed. The generator of the from-scratch entries never sees a
base image: only the distance it is trained with does, as the papers' LPIPS network saw ImageNet.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import torch

from bench.sdk.method import Method, PretrainThenAdapt, StandardNormalLatent
from bench.sdk.task import FewShotTask
from bench.sdk.training import minibatches, optimise, seeded_init
from methods._gan import DCGANGenerator, LatentSampler, to_unit
from methods._perceptual import PerceptualMatching


def pairwise_squared_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) mean squared differences, via ||a||^2 + ||b||^2 - 2 a.b in chunks of b."""
    chunk = max(64, min(chunk, 2**25 // max(1, a[0].numel())))  # a chunk of b in float64 stays under 256 MB
    a = a.flatten(1).double()
    a_norms = a.pow(2).sum(1, keepdim=True)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for start in range(0, b.shape[0], chunk):
        part = b[start : start + chunk].flatten(1).double()
        out[:, start : start + chunk] = (a_norms + part.pow(2).sum(1) - 2 * a @ part.T).clamp_min_(0)
    return (out / a.shape[1]).float()


MATCHINGS = ("perceptual", "pixel")


@dataclass(frozen=True)
class IMLEConfig:
    latent_dim: int = 64
    width: int = 64
    batch_size: int = 16  # training images per optimiser step (the papers: 4)
    lr: float = 2e-4  # Adam; the papers use 2e-6 for 200k iterations at 256 px
    tightening: float = 0.98  # adaimle: threshold <- tightening * the distance reached, on re-selection
    staleness: int = 1  # adaimle: rounds an example keeps its code before it may re-select
    force_resample: int = 5  # adaimle: rounds after which an example re-selects regardless
    pixel_weight: float = 0.1  # perceptual: weight of the per-pixel squared difference beside the features' distance
    # rsimle: epsilon = rejection_fraction x the median distance from a training image to its nearest other one.
    rejection_fraction: float = 0.7
    # rsimle: each training image rejects at most its nearest rejection_share x m / n pool samples (the authors' code:
    # its 5 nearest of a pool of 10 n), so no round loses more than that share of the pool.
    rejection_share: float = 0.5
    # Start from a generator pretrained with IMLE on the base classes (the `-pretrained` registry entries:
    # the two protocols are never mixed in one leaderboard row).
    pretrained: bool = False
    pretrain_subset: int = 256  # base images matched per pretraining round


@dataclass(frozen=True)
class PretrainedIMLEConfig(IMLEConfig):
    pretrained: bool = True


@dataclass(frozen=True)
class IMLEBudget:
    rounds: int  # pool draws and nearest-neighbour selections
    steps_per_round: int  # optimiser steps between two selections
    pool_size: int  # m: latent codes drawn per round
    pretrain_rounds: int = 0  # rounds on the base classes (only with `pretrained`)
    matching_steps: int = 0  # cross-entropy steps of the perceptual matching network on the base classes
    # The distance samples are matched in: "perceptual" (methods/_perceptual.py, the papers' choice) or "pixel"
    # (mean squared difference). A profile choice: on this machine's small matching network perceptual matching
    # left most samples as pixel noise (docs/methods.md#imle-family-imle-adaimle-rsimle-and--pretrained).
    matching: str = "pixel"

    def __post_init__(self):
        if self.matching not in MATCHINGS:
            raise ValueError(f"unknown matching '{self.matching}' (valid: {', '.join(MATCHINGS)})")
        if self.matching == "perceptual" and self.matching_steps < 1:
            raise ValueError("perceptual matching needs matching_steps >= 1 to train its network on the base classes")


IMLE_PROFILES = {
    # Per-pixel matching below `paper` (a named deviation: docs/methods.md#imle-family-imle-adaimle-rsimle-and--pretrained).
    "smoke": IMLEBudget(rounds=4, steps_per_round=5, pool_size=64),
    "quick": IMLEBudget(rounds=150, steps_per_round=20, pool_size=1000),
    # 500 rounds on the support set (about 5 minutes at one thread) (docs/methods.md#standard).
    "standard": IMLEBudget(rounds=500, steps_per_round=20, pool_size=1000),
    # The papers' pool (m = 10,000), tightening (0.98) and perceptual matching; 200k iterations at batch 4 there.
    "paper": IMLEBudget(
        rounds=10_000, steps_per_round=20, pool_size=10_000, matching="perceptual", matching_steps=5000
    ),
}
PRETRAINED_IMLE_PROFILES = {
    "smoke": dataclasses.replace(IMLE_PROFILES["smoke"], pretrain_rounds=2),
    "quick": dataclasses.replace(IMLE_PROFILES["quick"], pretrain_rounds=40),
    "standard": dataclasses.replace(IMLE_PROFILES["standard"], pretrain_rounds=1000),
    "paper": dataclasses.replace(IMLE_PROFILES["paper"], pretrain_rounds=2000),
}


class IMLEMethod(StandardNormalLatent, PretrainThenAdapt, LatentSampler, Method):
    """The generator trained from scratch on the support images only (the papers' protocol); it is the
    DCGAN-shaped generator of `methods/_gan.py` with layer normalisation (batch statistics would differ
    between the pool pass and the training pass)."""

    Config = IMLEConfig
    Budget = IMLEBudget
    profiles = IMLE_PROFILES
    capabilities = frozenset({"latent", "latent_prior", "transfer"})
    reports_checkpoints = True  # after each IMLE round of the support phase (`bench curve fid`)

    @abc.abstractmethod
    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """From (n, m) distances to the new pool and the (n,) distances of the currently selected samples (None in
        the first round), return the pool index per example and a mask of the examples that take it."""

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the vectors whose squared distances are the matching distance (differentiable)."""
        return self.matching.embed(images) if self.matching is not None else images.flatten(1)

    @torch.no_grad()
    def _embed_all(self, images: torch.Tensor) -> torch.Tensor:
        """`_embed` in chunks, on the method's device, gathered on the CPU."""
        return torch.cat([self._embed(chunk.to(self.device)).cpu() for chunk in images.split(500)])

    @torch.no_grad()
    def _embed_generated(self, z: torch.Tensor) -> torch.Tensor:
        """The embedded samples G(z), generated and embedded in chunks on the method's device, gathered on the CPU."""
        return torch.cat(
            [self._embed(to_unit(self.generator_net(chunk.to(self.device)))).cpu() for chunk in z.split(500)]
        )

    def _pool(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample_latent(n, generator)
        return z, self._embed_generated(z)

    def pretrain_on_base(self, task: FewShotTask, budget: IMLEBudget, seed: int, generator: torch.Generator) -> None:
        """The matching network (perceptual matching), the generator, and with `pretrained` IMLE on the base images."""
        cfg = self.config
        self.matching = None
        if budget.matching == "perceptual" and not len(task.base_images):
            # The unconditional protocol (a folder without classes) has no base classes to train the network on.
            self.training_log["matching"] = "pixel: the task has no base classes to train the matching network on"
        elif budget.matching == "perceptual":
            with self.phase("matching_network"):
                self.matching, self.training_log["matching"] = PerceptualMatching.trained_on_base(
                    task,
                    budget.matching_steps,
                    pixel_weight=cfg.pixel_weight,
                    seed=seed,
                    generator=generator,
                    device=self.device,
                    reporter=self.reporter,
                )
        else:
            self.training_log["matching"] = "pixel: the profile matches in per-pixel squared difference"
        self._build(task, seed)
        if cfg.pretrained:
            with self.phase("pretrain"):
                self._pretrain(task, budget, generator)

    def adapt_to_support(self, task: FewShotTask, budget: IMLEBudget, generator: torch.Generator) -> None:
        self._train_on_support(task, budget, generator)

    def _build(self, task: FewShotTask, seed: int) -> None:
        """The generator (initialised from `seed`) and its optimiser, which the support phase continues."""
        cfg = self.config
        with seeded_init(seed):
            self.generator_net = DCGANGenerator(cfg.latent_dim, task.image_shape, cfg.width, norm="layer").to(
                self.device
            )
        self.optimizer = torch.optim.Adam(self.generator_net.parameters(), lr=cfg.lr)

    def _train_on_support(self, task: FewShotTask, budget: IMLEBudget, generator: torch.Generator) -> None:
        """The IMLE rounds on the support set, with the variant's selection rule."""
        cfg, optimizer = self.config, self.optimizer
        data = task.support
        targets = self._embed_all(data)
        self.prepare_selection(targets)
        n = len(data)
        selected = torch.zeros(n, cfg.latent_dim)
        log = {"reselected": [], "nearest_distance": []}
        handle = self.reporter.task("IMLE rounds", budget.rounds)
        self.training_checkpoint("support", 0, budget.rounds)
        try:
            for round_index in range(budget.rounds):
                with self.phase("nearest_neighbours"):
                    pool_z, pool = self._pool(budget.pool_size, generator)
                    distances = pairwise_squared_distances(targets, pool)
                    # The generator moved since the last selection: how far each example's own sample is now.
                    current = None if round_index == 0 else self._distance_to_targets(selected, targets)
                    index, take = self.select(distances, current)
                    selected[take] = pool_z[index[take]]
                    taken = distances[torch.arange(n), index]
                    after = taken if current is None else torch.where(take, taken, current)
                log["reselected"].append(int(take.sum()))
                log["nearest_distance"].append(float(after.mean()))
                with self.phase("update"):
                    batches = minibatches(torch.arange(n), cfg.batch_size, generator)

                    def loss_fn(step: int, batches=batches) -> dict[str, torch.Tensor]:
                        index_batch = next(batches)
                        z = selected[index_batch].to(self.device)
                        generated = to_unit(self.generator_net(z))
                        return {"loss": (self._embed(generated) - targets[index_batch].to(self.device)).pow(2).mean()}

                    result = optimise(loss_fn, optimizer, budget.steps_per_round, phase=f"round {round_index}")
                log.setdefault("loss", []).append(result.get("loss", float("nan")))
                handle.advance()
                self.training_checkpoint("support", round_index + 1, budget.rounds)
        finally:
            handle.close()
        self.generator_net.eval()
        self.training_log["imle"] = {
            "final_nearest_distance": log["nearest_distance"][-1] if log["nearest_distance"] else None,
            "mean_reselected_per_round": sum(log["reselected"]) / max(1, len(log["reselected"])),
            "curve": {
                "step": list(range(1, len(log["loss"]) + 1)),
                "loss": log["loss"],
                "nearest_distance": log["nearest_distance"],
                "reselected_fraction": [r / n for r in log["reselected"]],
            },
            **self.selection_log(),
        }

    def _pretrain(self, task: FewShotTask, budget: IMLEBudget, generator: torch.Generator) -> None:
        """IMLE on the base classes: each round, a random subset of base images is matched to a fresh pool
        (nearest sample each, the vanilla rule) and pulled towards. Thresholds or rejections of the variant
        apply to the support phase only."""
        cfg, optimizer = self.config, self.optimizer
        losses = []
        handle = self.reporter.task("IMLE rounds on the base classes", budget.pretrain_rounds)
        try:
            for round_index in range(budget.pretrain_rounds):
                chosen = torch.randperm(len(task.base_images), generator=generator)[: cfg.pretrain_subset]
                images = task.base_images[chosen]
                targets = self._embed_all(images)
                pool_z, pool = self._pool(budget.pool_size, generator)
                selected = pool_z[pairwise_squared_distances(targets, pool).argmin(1)]
                batches = minibatches(torch.arange(len(images)), cfg.batch_size, generator)

                def loss_fn(step: int, batches=batches, selected=selected, targets=targets) -> dict[str, torch.Tensor]:
                    index = next(batches)
                    generated = to_unit(self.generator_net(selected[index].to(self.device)))
                    return {"loss": (self._embed(generated) - targets[index].to(self.device)).pow(2).mean()}

                phase = f"pretrain round {round_index}"
                losses.append(optimise(loss_fn, optimizer, budget.steps_per_round, phase=phase)["loss"])
                handle.advance()
        finally:
            handle.close()
        self.training_log["pretrain"] = {"curve": {"step": list(range(1, len(losses) + 1)), "loss": losses}}

    @torch.no_grad()
    def _distance_to_targets(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(n,) distance of each example's selected sample G(z_i) to the example (`targets`: embedded examples)."""
        return (self._embed_generated(z) - targets).pow(2).mean(1)

    def prepare_selection(self, targets: torch.Tensor) -> None:
        """Before the support phase's first round, given the embedded training images (a variant's thresholds)."""

    def selection_log(self) -> dict:
        """Variant-specific facts for the training log (thresholds, rejections)."""
        return {}

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator_net(z)


class PretrainedIMLE:
    """Mixin of the `-pretrained` entries: the generator is pretrained with IMLE on the base classes before the
    variant's support phase, the optimiser and the noise stream continuing from one to the other."""

    Config = PretrainedIMLEConfig
    profiles = PRETRAINED_IMLE_PROFILES
    needs_base_classes = True  # without base images the entry would be its plain variant under another name
