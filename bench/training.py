"""The one training loop every gradient-trained method hands its loss function to.

A method writes `loss_fn(step) -> {"loss": tensor, ...}` (other entries are logged); `optimise`
does the zero-grad / backward / step, stops with `TrainingDiverged` on a non-finite loss,
advances the progress bar and returns the mean of each logged value over the last tenth of
the steps (what goes into the run record's training log).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch

from bench.method import TrainingDiverged
from bench.progress import NullReporter, Reporter

LossFn = Callable[[int], dict[str, torch.Tensor]]


def optimise(
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    phase: str,
    reporter: Reporter | None = None,
) -> dict[str, float]:
    """Run `steps` optimiser steps on `loss_fn`; return the mean of each logged term over the last 10%."""
    handle = (reporter or NullReporter()).task(phase, steps)
    window = max(1, steps // 10)
    sums: dict[str, float] = {}
    try:
        for step in range(steps):
            terms = loss_fn(step)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{phase}: loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= steps - window:
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
            handle.advance()
    finally:
        handle.close()
    return {key: total / window for key, total in sums.items() if math.isfinite(total)}


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
