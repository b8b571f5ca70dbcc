"""The worked examples of CONTRIBUTING.md are true: the method file and the metric file, each loaded as the
one file it would be, run through the harness and reach the records, the leaderboard and the reference."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from conftest import requires_data
from test_layers import ALLOWED, project_imports

from bench.harness.executor import run_benchmark
from bench.harness.leaderboard import write_leaderboard
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore
from methods import METHODS
from metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def load_as(module_name: str, source: str, tmp_path: Path):
    """Import `source` as the module `module_name` (a file of that package), as if it were in the repository."""
    path = tmp_path / f"{module_name.replace('.', '_')}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def contributed(tmp_path, monkeypatch):
    method_source, metric_source = python_blocks((ROOT / "CONTRIBUTING.md").read_text())
    METHODS.names(), METRICS.names()  # discover first: a copy of undiscovered (empty) entries would be restored empty
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # registrations vanish with the test
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    for name in ("methods.pixel_bernoulli", "metrics.pixel_spread"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    load_as("methods.pixel_bernoulli", method_source, tmp_path)
    load_as("metrics.pixel_spread", metric_source, tmp_path)
    yield
    for name in ("methods.pixel_bernoulli", "metrics.pixel_spread"):
        sys.modules.pop(name, None)


def test_the_examples_import_only_what_their_layer_may():
    method_source, metric_source = python_blocks((ROOT / "CONTRIBUTING.md").read_text())
    for source, layer in ((method_source, "methods"), (metric_source, "metrics")):
        names = [name for _, name in project_imports(ast.parse(source))]
        assert names and all(any(n == p or n.startswith(p + ".") for p in ALLOWED[layer]) for n in names), names


@requires_data("fashion-mnist")
def test_the_example_method_and_metric_run_through_the_harness(contributed, tmp_path):
    assert "pixel-bernoulli" in METHODS.names() and "pixel_spread" in METRICS.names()
    store = ResultStore(tmp_path / "results")
    spec = RunSpec(
        ["pixel-bernoulli"],
        dataset="fashion-mnist",
        shots=4,
        seeds=[0],
        profile="smoke",
        n_samples=40,
        metrics=["pixel_spread", "mse", "nll"],
    )
    (outcome,) = run_benchmark(spec, store)
    assert outcome.status == "ok", outcome.record.get("failure")
    metrics = outcome.record["metrics"]
    assert {name: m["status"] for name, m in metrics.items()} == {"pixel_spread": "ok", "mse": "ok", "nll": "ok"}
    assert outcome.record["evaluation"]["settings"]["spread_max_images"] == 64  # its smoke setting, recorded
    assert 0 < metrics["pixel_spread"]["value"] <= 0.5  # binary pixels: a std of at most 1/2
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert "pixel-bernoulli" in text and "pixel_spread" in text
