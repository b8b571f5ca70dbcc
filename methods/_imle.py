"""Implicit Maximum Likelihood Estimation: the core the three IMLE variants share.

IMLE (Li and Malik, 2018) trains a generator G without a discriminator. Each round it draws a
shared pool of m latent codes, generates their images, and for every training image x_i selects
a latent code z_i whose sample is its nearest neighbour; then it takes optimiser steps that pull
G(z_i) towards x_i. Every training image gets a sample pulled towards it, so no mode is dropped.

The variants differ only in the selection (`IMLEMethod.select`):
- `imle`: every example takes the nearest sample of the new pool, every round;
- `adaimle` (Adaptive IMLE): per-example thresholds, an example re-selects only when the new pool
  has a sample within its threshold, which then tightens (a curriculum at each example's pace);
- `rsimle` (Rejection-Sampling IMLE): pool samples closer than epsilon to any training image are
  rejected before the selection, so the selected codes follow the test-time prior.

Distances: mean squared difference per pixel of [0, 1] images. (Never the domain evaluator's
features: the evaluator has seen the novel class and is the ruler every method is scored with.)
The nearest-neighbour search is one chunked matrix product per round
(`pairwise_squared_distances`), its time is the phase `fit.nearest_neighbours`.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import torch

from bench.sdk.method import Method, PretrainThenAdapt
from bench.sdk.task import FewShotTask
from bench.sdk.training import make_generator, minibatches, optimise, seeded_init
from methods._gan import DCGANGenerator, LatentSampler, to_unit


def pairwise_squared_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) mean squared differences, via ||a||^2 + ||b||^2 - 2 a.b in chunks of b."""
    a = a.flatten(1).double()
    a_norms = a.pow(2).sum(1, keepdim=True)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for start in range(0, b.shape[0], chunk):
        part = b[start : start + chunk].flatten(1).double()
        out[:, start : start + chunk] = (a_norms + part.pow(2).sum(1) - 2 * a @ part.T).clamp_min_(0)
    return (out / a.shape[1]).float()


@dataclass(frozen=True)
class IMLEConfig:
    latent_dim: int = 64
    width: int = 64
    batch_size: int = 16  # training images per optimiser step (the papers: 4)
    lr: float = 2e-4  # Adam; the papers use 2e-6 for 200k iterations at 256 px
    tightening: float = 0.98  # adaimle: threshold <- tightening * the distance reached, on re-selection
    staleness: int = 1  # adaimle: rounds an example keeps its code before it may re-select
    force_resample: int = 5  # adaimle: rounds after which an example re-selects regardless
    rejection_radius: float = 0.01  # rsimle: epsilon, in the distance's units (mean squared difference per pixel)
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


IMLE_PROFILES = {
    "smoke": IMLEBudget(rounds=4, steps_per_round=5, pool_size=64),
    "quick": IMLEBudget(rounds=150, steps_per_round=20, pool_size=1000),
    # The papers' pool (m = 10,000) and tightening (0.98); 200k iterations at batch 4 there.
    "paper": IMLEBudget(rounds=10_000, steps_per_round=20, pool_size=10_000),
}
PRETRAINED_IMLE_PROFILES = {
    "smoke": dataclasses.replace(IMLE_PROFILES["smoke"], pretrain_rounds=2),
    "quick": dataclasses.replace(IMLE_PROFILES["quick"], pretrain_rounds=40),
    "paper": dataclasses.replace(IMLE_PROFILES["paper"], pretrain_rounds=2000),
}


class IMLEMethod(LatentSampler, Method):
    """Trained from scratch on the support images only (the papers' protocol); the generator is
    the DCGAN-shaped generator of `methods/_gan.py` with layer normalisation (batch statistics would
    differ between the pool pass and the training pass)."""

    Config = IMLEConfig
    Budget = IMLEBudget
    profiles = IMLE_PROFILES
    capabilities = frozenset({"latent"})

    @abc.abstractmethod
    def select(self, distances: torch.Tensor, current: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """From (n, m) distances to the new pool and the (n,) distances of the currently selected samples (None in
        the first round), return the pool index per example and a mask of the examples that take it."""

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the vectors distances are measured between."""
        return images.flatten(1)

    @torch.no_grad()
    def _pool(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample_latent(n, generator)
        images = torch.cat([to_unit(self.generator_net(chunk.to(self.device))).cpu() for chunk in z.split(500)])
        return z, self._embed(images)

    def fit(self, task: FewShotTask, budget: IMLEBudget, seed: int) -> None:
        generator = make_generator(seed)
        self._build(task, seed)
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
        targets = self._embed(data)
        n = len(data)
        selected = torch.zeros(n, cfg.latent_dim)
        log = {"reselected": [], "nearest_distance": []}
        handle = self.reporter.task("IMLE rounds", budget.rounds)
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
        if not len(task.base_images):
            self.training_log["pretrain"] = "skipped: the task has no base images"
            return
        losses = []
        for round_index in range(budget.pretrain_rounds):
            chosen = torch.randperm(len(task.base_images), generator=generator)[: cfg.pretrain_subset]
            images = task.base_images[chosen]
            targets = self._embed(images)
            pool_z, pool = self._pool(budget.pool_size, generator)
            selected = pool_z[pairwise_squared_distances(targets, pool).argmin(1)]
            batches = minibatches(torch.arange(len(images)), cfg.batch_size, generator)

            def loss_fn(step: int, batches=batches, selected=selected, targets=targets) -> dict[str, torch.Tensor]:
                index = next(batches)
                generated = to_unit(self.generator_net(selected[index].to(self.device)))
                return {"loss": (self._embed(generated) - targets[index].to(self.device)).pow(2).mean()}

            losses.append(
                optimise(loss_fn, optimizer, budget.steps_per_round, phase=f"pretrain round {round_index}")["loss"]
            )
        self.training_log["pretrain"] = {"curve": {"step": list(range(1, len(losses) + 1)), "loss": losses}}

    @torch.no_grad()
    def _distance_to_targets(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(n,) distance of each example's selected sample G(z_i) to the example (`targets`: embedded examples)."""
        generated = torch.cat([to_unit(self.generator_net(chunk.to(self.device))).cpu() for chunk in z.split(500)])
        return (self._embed(generated) - targets).pow(2).mean(1)

    def selection_log(self) -> dict:
        """Variant-specific facts for the training log (thresholds, rejections)."""
        return {}

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator_net(z)


class PretrainedIMLE(PretrainThenAdapt):
    """Mixin of the `-pretrained` entries: IMLE on the base classes (`pretrain`), then the variant's support
    phase (`adapt`), the optimiser and the noise stream continuing from one to the other. With the `transfer`
    capability the harness pretrains once per base set and training seed and shares it across support draws."""

    Config = PretrainedIMLEConfig
    profiles = PRETRAINED_IMLE_PROFILES
    capabilities = frozenset({"latent", "transfer"})

    def pretrain_on_base(self, task: FewShotTask, budget: IMLEBudget, seed: int, generator: torch.Generator) -> None:
        self._build(task, seed)
        with self.phase("pretrain"):
            self._pretrain(task, budget, generator)

    def adapt_to_support(self, task: FewShotTask, budget: IMLEBudget, generator: torch.Generator) -> None:
        self._train_on_support(task, budget, generator)
