"""Methods and metrics from outside the package: an installed plugin (entry point) and `--import`."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import requires_data
from typer.testing import CliRunner

from bench.harness.cli import app
from methods import METHODS
from metrics import METRICS

PLUGIN_METHOD = '''
"""A throw-away plugin method: the support images, each shifted by one pixel in a seeded direction."""
from dataclasses import dataclass

import torch

from bench.sdk.method import PROFILES, Method
from methods import register


@dataclass(frozen=True)
class Config:
    pass


@dataclass(frozen=True)
class Budget:
    pass


@register
class {cls}(Method):
    title = "throw-away plugin: shifted support images"
    reference = "tests/test_plugins.py"
    Config, Budget = Config, Budget
    profiles = {{profile: Budget() for profile in PROFILES}}

    def fit(self, task, budget, seed):
        self.support = task.support

    def sample(self, n, generator):
        index = torch.randint(len(self.support), (n,), generator=generator)
        shifts = torch.randint(-1, 2, (2,), generator=generator).tolist()
        return torch.roll(self.support[index], shifts=shifts, dims=(2, 3))
'''

PLUGIN_METRIC = '''
"""A throw-away plugin metric: the mean brightness of the samples."""
from metrics import Metric, MetricResult, register

METRIC = register(
    Metric(
        compute=lambda inputs: MetricResult(float(inputs.samples.mean())),
        higher_is_better=None,
        needs=frozenset(),
        version="1",
        reference="tests/test_plugins.py",
        definition="mean pixel value of the samples",
    ),
    __name__,
)
'''


@pytest.fixture
def isolated_registries(monkeypatch):
    """Registrations and imported plugin modules vanish with the test (a module left imported would not register
    again in the next test)."""
    import sys

    for registry in (METHODS, METRICS):
        registry.names()  # discover the built-ins first: the copies below are then complete
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_origins", dict(registry._origins))
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("shifted_plugin", "my_generators")]:
        del sys.modules[name]


def write_package(root, package: str, modules: dict[str, str]) -> None:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / package / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch, isolated_registries):
    """A distribution `fewshot-shifted` installed the way pip lays one out: its package and a dist-info with entry points
    beside it on the path (and on PYTHONPATH, which spawned workers inherit)."""
    site = tmp_path / "site"
    write_package(site, "shifted_plugin", {"shifted": PLUGIN_METHOD.format(cls="Shifted"), "brightness": PLUGIN_METRIC})
    dist_info = site / "fewshot_shifted-0.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fewshot-shifted\nVersion: 0.3\n")
    (dist_info / "entry_points.txt").write_text(
        "[fewshot_bench.methods]\nshifted = shifted_plugin.shifted\n\n"
        "[fewshot_bench.metrics]\nbrightness = shifted_plugin.brightness\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    yield site


def test_an_installed_plugin_is_listed_with_its_origin_and_not_imported_before(installed_plugin):
    import sys

    assert "shifted" in METHODS.entry_points() and "shifted_plugin.shifted" not in sys.modules
    result = CliRunner().invoke(app, ["list", "methods", "--json"])
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["shifted"]["origin"] == "plugin fewshot-shifted 0.3 (entry point shifted_plugin.shifted)"
    assert listed["vae"]["origin"] == "built-in"
    metrics = {
        entry["name"]: entry for entry in json.loads(CliRunner().invoke(app, ["list", "metrics", "--json"]).stdout)
    }
    assert metrics["brightness"]["origin"].startswith("plugin fewshot-shifted 0.3")


@requires_data("fashion-mnist")
def test_an_installed_plugin_runs_through_bench_run_and_the_leaderboard(installed_plugin, tmp_path):
    results = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        ["run", "--methods", "shifted,support-copy", "--dataset", "fashion-mnist", "--profile", "smoke"]
        + ["--metrics", "mse,coverage,brightness", "--results-dir", str(results), "--jobs", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["key"]["method"] for r in records] == ["shifted", "support-copy"]
    assert all(r["status"] == "ok" for r in records)
    shifted = records[0]["metrics"]
    assert shifted["brightness"]["status"] == "ok" and 0 < shifted["brightness"]["value"] < 1
    assert "`shifted`" in (results / "leaderboard.md").read_text()


@requires_data("fashion-mnist")
def test_a_module_named_with_import_runs_in_worker_processes_too(tmp_path, monkeypatch, isolated_registries):
    path = tmp_path / "mine"
    write_package(path, "my_generators", {"my_shift": PLUGIN_METHOD.format(cls="MyShift")})
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", str(path))
    results = tmp_path / "results"
    common = ["--dataset", "fashion-mnist", "--profile", "smoke", "--metrics", "mse", "--results-dir", str(results)]
    unknown = CliRunner().invoke(app, ["run", "--methods", "my-shift", *common])
    assert unknown.exit_code == 2 and "unknown method 'my-shift'" in unknown.output
    missing = CliRunner().invoke(app, ["run", "--methods", "my-shift", "--import", "my_generators.nope", *common])
    assert missing.exit_code == 2 and "--import my_generators.nope: ModuleNotFoundError" in missing.output
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--methods",
            "my-shift",
            "--import",
            "my_generators.my_shift",
            "--seeds",
            "0,1",
            "--jobs",
            "2",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (results / "runs").rglob("*.json")) == ["seed0.json", "seed1.json"]
    assert METHODS.origin("my-shift") == "module my_generators.my_shift"
