"""Generate, then score: stored samples and checkpoints are scored again without training."""

import json
from dataclasses import dataclass

import pytest
from conftest import requires_data

from bench.harness.cli import app
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.rescore import rescore
from bench.harness.store import ResultStore
from metrics import METRICS as REGISTERED_METRICS
from metrics import Metric, profile_setting, profile_settings
from metrics.nll import NllSettings

pytestmark = requires_data("fashion-mnist")

# Every kind of metric: evaluator features (fid, coverage), the model (nll, backtracking), pixels (mse).
METRICS = ["fid", "coverage", "class_consistency", "nll", "lpips_backtrack", "mse", "support_nn_shift_mse"]


@pytest.fixture(scope="module")
def stored_runs(tmp_path_factory):
    """A smoke VAE run (a model with checkpoints) and a reference row (no model), stored once."""
    root = tmp_path_factory.mktemp("rescore") / "results"
    spec = RunSpec(
        ["vae", "support-augment"], dataset="fashion-mnist", shots=4, profile="smoke", n_samples=60, metrics=METRICS
    )
    outcomes = run_benchmark(spec, ResultStore(root))
    assert [o.status for o in outcomes] == ["ok", "ok"]
    return root


def _copy(root, tmp_path):
    import shutil

    target = tmp_path / "results"
    shutil.copytree(root, target)
    return ResultStore(target)


def _metrics(store: ResultStore) -> dict:
    return {record["key"]["method"]: record["metrics"] for record in store.records()}


def test_rescoring_unchanged_code_reproduces_every_outcome_exactly(stored_runs, tmp_path):
    store = _copy(stored_runs, tmp_path)
    before = _metrics(store)
    outcomes = rescore(store)
    assert [o.status for o in outcomes] == ["rescored", "rescored"]
    assert all(o.changed == [] and o.kept == {} for o in outcomes)
    assert _metrics(store) == before
    assert all("rescored" in record for record in store.records())


def test_a_metric_change_is_picked_up_without_training(stored_runs, tmp_path, monkeypatch):
    store = _copy(stored_runs, tmp_path)
    before = _metrics(store)["vae"]["mse"]["value"]

    # A different declared setting stands in for changed metric code: the stored samples are scored again.
    @dataclass(frozen=True)
    class FewerImportanceSamples(NllSettings):
        nll_importance_samples: int = profile_setting(100, "K", smoke=2)

    nll = REGISTERED_METRICS.get("nll")
    monkeypatch.setitem(
        REGISTERED_METRICS._entries, "nll", Metric(**{**nll.__dict__, "settings": FewerImportanceSamples})
    )
    monkeypatch.setattr("bench.sdk.method.Method.fit", lambda *a, **k: pytest.fail("rescoring must not train"))
    outcomes = {o.key.method: o for o in rescore(store, methods=["vae"], metric_names=["nll", "mse"])}
    record = next(r for r in store.records() if r["key"]["method"] == "vae")
    assert outcomes["vae"].changed == ["nll"]
    assert record["metrics"]["nll"]["card"]["importance_samples"] == 2
    assert record["metrics"]["mse"]["value"] == before
    assert record["evaluation"]["settings"]["nll_importance_samples"] == 2


def test_rescoring_some_metrics_leaves_the_others_settings_as_they_were_measured(stored_runs, tmp_path, monkeypatch):
    """A record says which settings its values were measured with: rescoring `mse` after `nll`'s setting changed
    must not claim the kept `nll` value was measured with the new one (the record stays stale for `bench run`)."""
    store = _copy(stored_runs, tmp_path)
    measured_with = next(r for r in store.records() if r["key"]["method"] == "vae")["evaluation"]["settings"]

    @dataclass(frozen=True)
    class FewerImportanceSamples(NllSettings):
        nll_importance_samples: int = profile_setting(100, "K", smoke=measured_with["nll_importance_samples"] + 1)

    nll = REGISTERED_METRICS.get("nll")
    monkeypatch.setitem(
        REGISTERED_METRICS._entries, "nll", Metric(**{**nll.__dict__, "settings": FewerImportanceSamples})
    )
    rescore(store, methods=["vae"], metric_names=["mse"])
    record = next(r for r in store.records() if r["key"]["method"] == "vae")
    assert record["evaluation"]["settings"] == measured_with
    assert profile_settings("smoke") != measured_with

    rescore(store, methods=["vae"], metric_names=["nll"])
    record = next(r for r in store.records() if r["key"]["method"] == "vae")
    assert record["evaluation"]["settings"] == profile_settings("smoke")


def test_a_missing_or_foreign_checkpoint_keeps_the_old_model_metrics_and_says_why(stored_runs, tmp_path):
    store = _copy(stored_runs, tmp_path)
    before = _metrics(store)["vae"]
    record = next(r for r in store.records() if r["key"]["method"] == "vae")
    checkpoint = store.root / record["artifacts"]["checkpoints"][0]["path"]
    checkpoint.write_bytes(checkpoint.read_bytes() + b"tampered")
    outcome = next(o for o in rescore(store, methods=["vae"]))
    after = _metrics(store)["vae"]
    assert set(outcome.kept) == {"nll", "lpips_backtrack"}
    assert "not the" in after["nll"]["kept"] and after["nll"]["value"] == before["nll"]["value"]
    assert after["fid"] == before["fid"]  # the rest was rescored, and reproduced

    checkpoint.unlink()
    rescore(store, methods=["vae"])
    assert "missing" in _metrics(store)["vae"]["nll"]["kept"]


def test_runs_without_samples_fail_to_rescore_with_a_reason_and_the_cli_says_so(stored_runs, tmp_path):
    from typer.testing import CliRunner

    store = _copy(stored_runs, tmp_path)
    record = next(r for r in store.records() if r["key"]["method"] == "support-augment")
    (store.root / record["artifacts"]["samples"]).unlink()
    result = CliRunner().invoke(
        app, ["rescore", "--results-dir", str(store.root), "--json", "--leaderboard", str(tmp_path / "lb.md")]
    )
    assert result.exit_code == 1
    rows = {row["key"]["method"]: row for row in json.loads(result.stdout)}
    assert rows["support-augment"]["status"] == "failed" and "samples" in rows["support-augment"]["reason"]

    vae = next(r for r in store.records() if r["key"]["method"] == "vae")
    samples = store.root / vae["artifacts"]["samples"]
    samples.write_bytes(samples.read_bytes() + b"\0")
    outcome = next(o for o in rescore(store, methods=["vae"]))
    assert outcome.status == "failed" and "not the file the run wrote" in outcome.reason
    assert rows["vae"]["status"] == "rescored"


def test_rescore_rejects_unknown_names_and_empty_folders(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["rescore", "--results-dir", str(tmp_path), "--methods", "nope"])
    assert result.exit_code == 2 and "Valid methods" in result.output
    result = CliRunner().invoke(app, ["rescore", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no run records" in " ".join(result.output.split())


def test_a_folder_run_is_rescored_in_a_process_that_never_read_its_folder(tmp_path, monkeypatch):
    from bench.data.datasets import DATASETS
    from bench.data.datasets.folder import write_folder

    folder = tmp_path / "boots"
    write_folder(DATASETS.get("fashion-mnist"), "9", 40, seed=3, out=folder)
    spec = RunSpec(
        ["support-copy"], dataset=f"folder:{folder}@28", shots=36, profile="smoke", n_samples=30, metrics=["fid", "mse"]
    )
    store = ResultStore(tmp_path / "results")
    assert [o.status for o in run_benchmark(spec, store)] == ["ok"]
    before = _metrics(store)
    # A fresh process knows the folder's dataset only by the spec it was read from: forget it.
    (name,) = {record["split"]["dataset"] for record in store.records()}
    monkeypatch.delitem(DATASETS._entries, name)
    outcomes = rescore(store)
    assert [o.status for o in outcomes] == ["rescored"] and _metrics(store) == before
    # Without the folder there is nothing to rebuild the split from, and the reason names it.
    monkeypatch.delitem(DATASETS._entries, name)
    folder.rename(tmp_path / "elsewhere")
    (outcome,) = rescore(store)
    assert outcome.status == "failed" and str(folder) in outcome.reason and "cannot be read here" in outcome.reason
