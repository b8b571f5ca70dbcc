"""Reptile meta-training: Nichol, Achiam and Schulman, On First-Order Meta-Learning Algorithms, 2018, Algorithm 1.

Each meta-iteration copies the meta-weights Phi into a working copy W, trains W on one task (the
method's inner loop: it draws the task and takes its K optimiser steps on W), then moves Phi
towards W. The move is written as an optimiser step, as FIGR does: the gradient of Phi is set to
Phi - W and the meta-optimiser steps. Plain SGD with learning rate eps is Algorithm 1's
Phi <- Phi + eps (W - Phi); FIGR uses Adam. `reptile(..., anneal=True)` anneals eps linearly to 0
over the iterations, the schedule of Nichol et al.'s experiments.

Batch-norm statistics would be averaged across tasks by this update, so networks meta-trained
with it use layer normalisation or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.sdk.method import TrainingDiverged
from bench.sdk.progress import Reporter
from bench.sdk.training import run_steps

InnerLoop = Callable[[int], dict[str, float]]


@torch.no_grad()
def reptile_step(meta: nn.Module, adapted: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """One outer update of `meta` (Phi) towards `adapted` (W); returns the distance ||Phi - W|| before it."""
    squared = 0.0
    for phi, w in zip(meta.parameters(), adapted.parameters(), strict=True):
        difference = phi - w
        phi.grad = difference.clone()
        squared += float(difference.pow(2).sum())
    optimizer.step()
    return squared**0.5


@torch.no_grad()
def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Overwrite `target`'s parameters and buffers with `source`'s (a task's fresh copy W of Phi)."""
    target.load_state_dict(source.state_dict())


@dataclass
class MetaNetwork:
    """One network Reptile meta-trains: the meta-weights Phi (`meta`), the working copy W the inner
    loop trains (`fast`, same architecture) and the optimiser of the outer update over Phi's parameters.

    `name` suffixes the logged distance when several networks are meta-trained together (FIGR's
    generator and critic): `reptile_distance_<name>`, else `reptile_distance`.
    """

    meta: nn.Module
    fast: nn.Module
    optimizer: torch.optim.Optimizer
    name: str = ""

    @property
    def distance_term(self) -> str:
        return f"reptile_distance_{self.name}" if self.name else "reptile_distance"


def reptile(
    networks: Sequence[MetaNetwork],
    inner_loop: InnerLoop,
    iterations: int,
    *,
    anneal: bool = False,
    phase: str = "meta-train",
    reporter: Reporter | None = None,
    curve_points: int = 200,
) -> dict:
    """Algorithm 1, `iterations` times: copy each Phi into its W, run `inner_loop(iteration)`, move each Phi towards its W.

    `inner_loop` draws one task and trains the working copies on it (fresh inner optimisers over
    `fast` parameters are its business) and returns its logged terms. `anneal`: each meta-optimiser's
    learning rate eps becomes eps * (1 - iteration / iterations) before its step. A non-finite inner
    loss (`TrainingDiverged`) is re-raised naming the meta-iteration. Returns what `run_steps` does:
    the mean over the last tenth of the iterations of the inner loop's terms and of each network's
    distance ||Phi - W|| before its update, and `curve`.
    """
    initial_rates = [[group["lr"] for group in network.optimizer.param_groups] for network in networks]

    def meta_iteration(iteration: int) -> dict[str, float]:
        for network in networks:
            copy_weights(network.meta, network.fast)
        try:
            terms = inner_loop(iteration)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"meta-iteration {iteration}: {exc}") from None
        for network, rates in zip(networks, initial_rates):
            if anneal:
                for group, rate in zip(network.optimizer.param_groups, rates):
                    group["lr"] = rate * (1 - iteration / iterations)
            terms[network.distance_term] = reptile_step(network.meta, network.fast, network.optimizer)
        return terms

    return run_steps(meta_iteration, iterations, phase=phase, reporter=reporter, curve_points=curve_points)
