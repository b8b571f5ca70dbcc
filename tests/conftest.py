"""Shared fixtures. Data tests use the real files found through BENCH_DATA_DIR (CI points it at
../shared/data); when it is unset and that folder exists beside the checkout, it is used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_STAGED = REPO.parent / "shared" / "data"
if not os.environ.get("BENCH_DATA_DIR") and _STAGED.is_dir():
    os.environ["BENCH_DATA_DIR"] = str(_STAGED)


# Caches (trained domain evaluators) go to BENCH_CACHE_DIR when set (CI sets it, so evaluators
# are trained once per CI run), else to a per-session temporary folder, never the user's home.
_CACHE = os.environ.get("BENCH_CACHE_DIR")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", _CACHE or str(tmp_path_factory.getbasetemp() / "cache"))


def _has(dataset: str) -> bool:
    from bench.data.datasets import DATASETS

    spec = DATASETS.get(dataset)
    return len(spec.find_files()) == len(spec.slots)


def requires_data(dataset: str):
    return pytest.mark.skipif(not _has(dataset), reason=f"{dataset} files not found (set BENCH_DATA_DIR)")


@pytest.fixture(scope="session")
def fashion_split():
    from bench.data.splits import make_split

    return make_split("fashion-mnist", shots=4, seed=0)


@pytest.fixture(scope="session")
def smoke_vae(fashion_split):
    """A VAE fitted at the smoke budget on the Fashion-MNIST 4-shot split (read-only: tests share it)."""
    from methods.vae import VAE

    method = VAE()
    method.fit(fashion_split.task, VAE.profiles["smoke"], 0)
    return method


def failing_method(reason: str, on_fit: int | None = None):
    """A throw-away method whose `fit` raises `TrainingDiverged(reason)`: every time, or only the `on_fit`-th."""
    from dataclasses import dataclass

    import torch

    from bench.sdk.method import PROFILES, Method, TrainingDiverged

    @dataclass
    class Config:
        pass

    @dataclass(frozen=True)
    class Budget:
        steps: int = 1

    class Failing(Method):
        title, reference = "fails on purpose", "test"
        fits = 0

        def fit(self, task, budget, seed):
            type(self).fits += 1
            if on_fit in (None, type(self).fits):
                raise TrainingDiverged(reason)

        def sample(self, n, generator):
            return torch.zeros(n, 1, 28, 28)

    Failing.Config, Failing.Budget, Failing.profiles = Config, Budget, {p: Budget() for p in PROFILES}
    return Failing
