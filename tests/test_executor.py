"""The local executor: runs side by side in worker processes give the same records as one after another."""

from __future__ import annotations

import json

import pytest
from conftest import requires_data

from bench.harness.executor import run_benchmark, sweep_units
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore
from bench.sdk.registry import UnknownNameError

# What may differ between two executions of the same run: when it was made, how long its phases took, and
# whether its pretraining was computed or loaded from the cache (the second execution loads the first's).
NOT_MEASURED = ("created_at", "timings")


def comparable(record: dict) -> str:
    kept = {k: v for k, v in record.items() if k not in NOT_MEASURED}
    if "pretraining" in kept:
        kept["pretraining"] = {k: v for k, v in kept["pretraining"].items() if k != "reused"}
    return json.dumps(kept, sort_keys=True)


@requires_data("fashion-mnist")
def test_two_jobs_write_the_same_records_as_one(tmp_path):
    spec = RunSpec(
        ["vae", "imle", "support-augment"],
        dataset="fashion-mnist",
        seeds=[0, 1],
        profile="smoke",
        n_samples=60,
        metrics=["fid", "kid", "precision", "coverage", "mse", "lpips_backtrack", "nll"],
    )
    finished = []
    one = run_benchmark(spec, ResultStore(tmp_path / "one"), jobs=1, threads=1)
    two = run_benchmark(spec, ResultStore(tmp_path / "two"), jobs=2, threads=1, on_outcome=finished.append)
    assert [o.key for o in two] == [o.key for o in one]  # plan order, whatever order the runs ended in
    assert sorted(o.key.method for o in finished) == sorted(o.key.method for o in two)
    assert all(o.status == "ok" for o in one + two)
    for a, b in zip(one, two):
        assert b.record["environment"]["torch_threads"] == a.record["environment"]["torch_threads"] == 1
        assert comparable(b.record) == comparable(a.record), a.key
    # The stored files agree too (the samples byte for byte, by their digests in the records).
    for outcome in one:
        stored = ResultStore(tmp_path / "two").load(outcome.key)
        assert comparable(stored) == comparable(outcome.record)
    # A second sweep finds every run stored and current: nothing is run again.
    again = run_benchmark(spec, ResultStore(tmp_path / "two"), jobs=2, threads=1)
    assert {o.status for o in again} == {"skipped"}


def test_units_follow_the_plan_order_and_unknown_methods_fail_first(tmp_path):
    spec = RunSpec(["vae", "imle"], dataset="fashion-mnist", seeds=[3, 1], profile="smoke")
    units = sweep_units(spec, str(tmp_path), threads=2)
    assert [(u.seed, u.method) for u in units] == [(3, "vae"), (3, "imle"), (1, "vae"), (1, "imle")]
    assert {u.threads for u in units} == {2}
    with pytest.raises(UnknownNameError, match="unknown method"):
        sweep_units(RunSpec(["vae", "nope"], dataset="fashion-mnist"), str(tmp_path), threads=1)


def test_jobs_below_one_are_refused(tmp_path):
    spec = RunSpec(["support-copy"], dataset="fashion-mnist", profile="smoke")
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_benchmark(spec, ResultStore(tmp_path), jobs=0)
