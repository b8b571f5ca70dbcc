"""Reproduction checks that train for minutes (`pytest -m slow`, `tox -e slow`): the shipped ruler's recipe and a
committed quick row are reproduced from their seeds on this machine.

Bit identity is not expected across CPUs (float reductions differ), so each check compares what a user can
compare: the evaluator's test accuracy, and the committed run's scores within the smoke baseline's kind of tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import requires_data

from bench.features.evaluator import PINNED_WEIGHTS, train_evaluator
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "dataset", [pytest.param(name, marks=requires_data(name)) for name in ("fashion-mnist", "mnist")]
)
def test_retraining_the_recipe_reaches_the_pinned_accuracy(dataset):
    """`bench evaluator train` reproduces the shipped ruler: about 6 (Fashion-MNIST) and 10 (MNIST) minutes at one thread."""
    _, card = train_evaluator(dataset)
    assert card["test_accuracy"] == pytest.approx(PINNED_WEIGHTS[dataset].test_accuracy, abs=0.005)


@requires_data("fashion-mnist")
def test_a_committed_quick_row_is_reproduced_from_its_seed(tmp_path):
    """The committed `vae` quick run of seed 0 (about 10 minutes at one thread), re-run: the same scores up to the
    spread another CPU's float reductions give."""
    committed = json.loads((ROOT / "results/runs/fashion-mnist/novel9-4shot.v1/vae/quick/seed0.json").read_text())
    spec = RunSpec(
        ["vae"], dataset="fashion-mnist", shots=4, seeds=[0], profile="quick", metrics=["fid", "mse", "ssim"]
    )
    (outcome,) = run_benchmark(spec, ResultStore(tmp_path / "results"))
    assert outcome.status == "ok"
    rerun = outcome.record["metrics"]
    if outcome.record["artifacts"]["samples_sha256"] == committed["artifacts"]["samples_sha256"]:
        assert all(rerun[m]["value"] == committed["metrics"][m]["value"] for m in ("fid", "mse", "ssim"))
    assert rerun["fid"]["value"] == pytest.approx(committed["metrics"]["fid"]["value"], rel=0.1)
    assert rerun["mse"]["value"] == pytest.approx(committed["metrics"]["mse"]["value"], abs=0.002)
    assert rerun["ssim"]["value"] == pytest.approx(committed["metrics"]["ssim"]["value"], abs=0.02)
