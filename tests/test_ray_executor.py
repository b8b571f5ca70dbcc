"""The Ray executor on a real local Ray instance, and `--shard`: the same records as the local executor."""

from __future__ import annotations

import textwrap

import pytest
from conftest import requires_data
from test_executor import comparable
from test_plugins import isolated_registries  # noqa: F401 - a fixture
from typer.testing import CliRunner

from bench.harness.cli import app
from bench.harness.executor import Shard, run_benchmark, sweep_units
from bench.harness.plan import RunSpec
from bench.harness.ray_executor import task_environment
from bench.harness.store import ResultStore


def records(results_dir) -> dict:
    return {tuple(r["key"].values()): r for r in ResultStore(results_dir).records()}


def test_shards_are_disjoint_and_together_the_whole_sweep(tmp_path):
    spec = RunSpec(["vae", "imle", "support-copy"], dataset="fashion-mnist", seeds=[0, 1, 2], profile="smoke")
    units = sweep_units(spec, str(tmp_path), threads=1)
    parts = [Shard(i, 4).select(units) for i in range(4)]
    assert sorted(units.index(u) for part in parts for u in part) == list(range(len(units)))
    assert {m for m in (u.method for u in parts[0])} == {"vae", "imle", "support-copy"}  # a mix of methods
    for text in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="i/N"):
            Shard.parse(text)


@requires_data("fashion-mnist")
def test_sharded_runs_store_what_one_run_stores(tmp_path):
    arguments = ["run", "--methods", "support-copy,support-augment", "--dataset", "fashion-mnist"]
    arguments += ["--profile", "smoke", "--seeds", "0,1,2", "--metrics", "fid,coverage", "--jobs", "1"]
    whole = CliRunner().invoke(app, [*arguments, "--results-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    for part in ("0/2", "1/2"):
        result = CliRunner().invoke(app, [*arguments, "--results-dir", str(tmp_path / "parts"), "--shard", part])
        assert result.exit_code == 0, result.output
        assert "once every part has ended" in " ".join(result.output.split())
    assert not (tmp_path / "parts" / "leaderboard.md").exists()
    expected, got = records(tmp_path / "whole"), records(tmp_path / "parts")
    assert sorted(got) == sorted(expected) and len(got) == 6
    assert all(comparable(got[key]) == comparable(expected[key]) for key in expected)


def test_the_environment_given_to_tasks_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = task_environment({"BENCH_DATA_DIR": "data", "PYTHONPATH": "plugins:/opt/x", "HOME": "/root"})
    assert found == {"BENCH_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": f"{tmp_path / 'plugins'}:/opt/x"}


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(
        app,
        ["run", "--methods", "support-copy", "--dataset", "fashion-mnist", "--profile", "smoke"]
        + ["--executor", "ray", "--results-dir", str(tmp_path)],
    )
    assert result.exit_code == 1 and "pip install -e '.[ray]'" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def ray():
    """A local Ray instance of 2 CPUs for the module's tests (started once: about 2.5 s here)."""
    ray = pytest.importorskip("ray", reason="the Ray executor is the optional extra '.[ray]'")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@requires_data("fashion-mnist")
def test_ray_writes_the_same_records_as_the_local_executor(ray, tmp_path):
    arguments = ["run", "--methods", "vae,dcgan", "--dataset", "fashion-mnist", "--profile", "smoke"]
    arguments += ["--seeds", "0,1", "--threads", "1"]
    local = CliRunner().invoke(app, [*arguments, "--jobs", "2", "--results-dir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = CliRunner().invoke(app, [*arguments, "--executor", "ray", "--results-dir", str(tmp_path / "ray")])
    assert on_ray.exit_code == 0, on_ray.output
    expected, got = records(tmp_path / "local"), records(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and len(got) == 4
    for key in expected:
        assert got[key]["status"] == "ok"
        assert comparable(got[key]) == comparable(expected[key]), key
    assert (tmp_path / "ray" / "leaderboard.md").is_file()  # rendered once, at the end


DYING_METHOD = '''
"""A method whose process dies in `fit` (as a worker killed for memory would): no record can be written."""
import os
from dataclasses import dataclass

from bench.sdk.method import PROFILES, Method
from methods import register


@dataclass(frozen=True)
class Nothing:
    pass


@register
class DiesInFit(Method):
    title = "dies in fit"
    reference = "tests/test_ray_executor.py"
    Config, Budget = Nothing, Nothing
    profiles = {profile: Nothing() for profile in PROFILES}

    def fit(self, task, budget, seed):
        os._exit(1)

    def sample(self, n, generator):
        raise AssertionError("never sampled")
'''


@requires_data("fashion-mnist")
def test_a_task_that_dies_leaves_no_record_and_the_sweep_goes_on(ray, tmp_path, monkeypatch, isolated_registries):  # noqa: F811
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "dies_in_fit.py").write_text(textwrap.dedent(DYING_METHOD))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "plugins"))
    if ray.is_initialized():  # a fresh instance, so that its workers see the plugin's PYTHONPATH
        ray.shutdown()
    spec = RunSpec(
        ["dies-in-fit", "support-copy"],
        dataset="fashion-mnist",
        profile="smoke",
        metrics=["fid"],
        imports=("dies_in_fit",),
    )
    store = ResultStore(tmp_path / "results")
    outcomes = run_benchmark(spec, store, threads=1, executor="ray")
    died, copied = outcomes
    assert died.status == "failed" and "Ray task ended without a result" in died.record["failure"]["reason"]
    assert died.key.method == "dies-in-fit" and died.key.split_id == copied.key.split_id
    assert store.load(died.key) is None  # nothing partial stored: the next sweep runs it again
    assert copied.status == "ok" and store.load(copied.key)["status"] == "ok"
