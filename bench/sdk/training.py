"""The training loop every gradient-trained method hands its loss (or its step) to.

A method writes `loss_fn(step) -> {"loss": tensor, ...}` (other entries are logged); `optimise`
does the zero-grad / backward / step, stops with `TrainingDiverged` on a non-finite loss,
advances the progress bar and returns the mean of each logged value over the last tenth of
the steps (what goes into the run record's training log) and, if asked, the loss curve. A
method whose step updates several networks with their own losses (VCE's encoder and
convertor) writes the whole step and hands it to `run_steps`, the same loop underneath; so do
the GANs' alternating loop and Reptile's meta-iterations (`bench.sdk.reptile`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch

from bench.sdk.method import TrainingDiverged
from bench.sdk.progress import NullReporter, Reporter

LossFn = Callable[[int], dict[str, torch.Tensor]]
StepFn = Callable[[int], dict[str, float]]


class Curve:
    """Logged terms averaged over consecutive blocks of steps: at most `points` points for the loss-curve plot."""

    def __init__(self, steps: int, points: int = 200):
        self.block = max(1, math.ceil(steps / points))
        self.steps = steps
        self.data: dict[str, list[float]] = {"step": []}
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step: int, terms: dict[str, float]) -> None:
        for key, number in terms.items():
            self._sums[key] = self._sums.get(key, 0.0) + number
        self._count += 1
        if (step + 1) % self.block == 0 or step == self.steps - 1:
            self.data["step"].append(step + 1)
            for key, total in self._sums.items():
                self.data.setdefault(key, []).append(total / self._count)
            self._sums, self._count = {}, 0


def run_steps(
    step_fn: StepFn,
    steps: int,
    *,
    phase: str,
    reporter: Reporter | None = None,
    curve_points: int | None = None,
) -> dict:
    """Run `step_fn(step)` (one training step that updates the model itself, returning its logged terms) `steps` times.

    Advances the progress bar; returns the mean of each logged term over the last 10% of the
    steps (non-finite means are dropped) and, with `curve_points`, `curve`: the terms averaged
    over blocks of steps (`Curve`) for the loss-curve plot. A step that meets a non-finite loss
    raises `TrainingDiverged` itself (see `finite_loss`).
    """
    handle = (reporter or NullReporter()).task(phase, steps)
    window = max(1, steps // 10)
    sums: dict[str, float] = {}
    curve = Curve(steps, curve_points) if curve_points else None
    try:
        for step in range(steps):
            terms = step_fn(step)
            if step >= steps - window:
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
            if curve is not None:
                curve.add(step, terms)
            handle.advance()
    finally:
        handle.close()
    result: dict = {key: total / window for key, total in sums.items() if math.isfinite(total)}
    if curve is not None:
        result["curve"] = curve.data
    return result


def finite_loss(loss: torch.Tensor, phase: str, step: int, term: str = "loss") -> torch.Tensor:
    """`loss`, or `TrainingDiverged` naming the phase, term and step if it is NaN or infinite."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{phase}: {term} became {loss.item()} at step {step}")
    return loss


def optimise(
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    phase: str,
    reporter: Reporter | None = None,
    curve_points: int | None = None,
) -> dict:
    """Run `steps` optimiser steps on `loss_fn`; return the mean of each logged term over the last 10% (and the curve)."""

    def step_fn(step: int) -> dict[str, float]:
        terms = loss_fn(step)
        loss = finite_loss(terms["loss"], phase, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {key: float(value.detach()) for key, value in terms.items()}

    return run_steps(step_fn, steps, phase=phase, reporter=reporter, curve_points=curve_points)


def minibatches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless minibatches from reshuffled epochs of `data` (the last short batch of an epoch is dropped)."""
    n = data.shape[0]
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield data[order[start : start + batch_size]]


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run a block (module construction, dropout) under a fixed global seed without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
