"""A new method is one file that imports only the SDK layer (`bench.sdk`): a throw-away method written to a
temporary folder, registered, and run through the harness like any registered method."""

import ast
import importlib.util
import sys
import textwrap

import pytest
from conftest import requires_data

import methods
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.samples import load_samples
from bench.harness.store import ResultStore
from methods import METHODS

THROWAWAY = textwrap.dedent('''
    """Throw-away method: the per-pixel mean of the support images, learnt by gradient descent."""

    from dataclasses import dataclass

    import torch

    from bench.sdk.method import PROFILES, Method
    from bench.sdk.training import optimise


    @dataclass(frozen=True)
    class MeanConfig:
        lr: float = 0.25


    @dataclass(frozen=True)
    class MeanBudget:
        steps: int


    class SupportMean(Method):
        title = "throw-away: the mean support image"
        Config = MeanConfig
        Budget = MeanBudget
        profiles = {profile: MeanBudget(steps=60) for profile in PROFILES}

        def fit(self, task, budget, seed):
            # Sum over pixels of the mean squared error to the support images: each step halves the
            # distance of every pixel to the support mean (gradient 2 (mean - target), lr 1/4).
            self.mean = torch.nn.Parameter(torch.zeros(task.image_shape))
            support = task.support
            optimizer = torch.optim.SGD([self.mean], lr=self.config.lr)
            with self.phase("fit"):
                self.training_log["fit"] = optimise(lambda step: {"loss": (self.mean - support).pow(2).mean(0).sum()},
                                                    optimizer, budget.steps, phase="fit", reporter=self.reporter,
                                                    curve_points=10)

        @torch.no_grad()
        def sample(self, n, generator):
            return self.mean.clamp(0, 1).expand(n, *self.mean.shape).clone()
''')


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.fixture
def throwaway_method(tmp_path, monkeypatch):
    """The throw-away file imported as module `throwaway_mean` and registered, for this test only."""
    path = tmp_path / "throwaway_mean.py"
    path.write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable by name, as a checkpoint's unpickling would need
    spec = importlib.util.spec_from_file_location("throwaway_mean", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "throwaway_mean", module)
    spec.loader.exec_module(module)
    METHODS.names()  # discover the real methods first, so that the copy below holds them all
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # the registration is undone after the test
    methods.register(module.SupportMean)
    return module


def test_the_throwaway_file_imports_nothing_of_the_project_but_the_sdk():
    project = {name for name in imported_modules(THROWAWAY) if name.split(".")[0] in ("bench", "methods", "metrics")}
    assert project and all(name.startswith("bench.sdk.") for name in project)


@requires_data("fashion-mnist")
def test_a_registered_throwaway_method_runs_through_the_harness(throwaway_method, tmp_path, fashion_split):
    assert "throwaway-mean" in METHODS.names()
    spec = RunSpec(methods=["throwaway-mean"], dataset="fashion-mnist", profile="smoke", metrics=["mse"])
    (outcome,) = run_benchmark(spec, ResultStore(tmp_path / "results"))
    record = outcome.record
    assert outcome.status == "ok" and record["status"] == "ok", record.get("failure")
    assert record["method"]["name"] == "throwaway-mean" and record["method"]["budget"] == {"steps": 60}
    assert record["split"]["sha256"] == fashion_split.info.sha256
    assert record["metrics"]["mse"]["status"] == "ok"

    # The stored samples are the throw-away method's: every one is the support mean (to the 8 bits samples are stored in).
    samples = load_samples(tmp_path / "results" / record["artifacts"]["samples"], (1, 28, 28))
    expected = fashion_split.task.support.mean(0)
    assert samples.shape == (record["evaluation"]["n_samples"], 1, 28, 28)
    assert (samples - expected).abs().max() <= 0.5 / 255 + 1e-6
    # Its training log came through too: the loss ends at its minimum, the support's per-pixel variance summed.
    variance = (fashion_split.task.support - expected).pow(2).mean(0).sum().item()
    assert record["training_log"]["fit"]["loss"] == pytest.approx(variance, rel=1e-5)
