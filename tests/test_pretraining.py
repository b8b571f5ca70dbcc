"""Pretraining once: the cached base-class phase gives the results of an uncached fit, is shared by support
draws and refused when damaged; training seeds are separate from support draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import requires_data

from bench.data.splits import make_split
from bench.harness.environment import thread_count
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec, derive_seed, plan_run, record_config_hash
from bench.harness.pretraining import PretrainingCache, base_only, pretraining_key
from bench.harness.runner import pretrained_for
from bench.harness.store import ResultStore, RunKey
from bench.sdk.progress import NullReporter
from methods import METHODS
from metrics import METRICS

TRANSFER = [name for name in METHODS.names() if "transfer" in METHODS.get(name).capabilities]
SMOKE = dict(dataset="fashion-mnist", profile="smoke", n_samples=40, metrics=["mse"])


def stored_samples(store: ResultStore, record: dict) -> np.ndarray:
    return np.load(store.root / record["artifacts"]["samples"])["samples"]


@requires_data("fashion-mnist")
@pytest.mark.parametrize("method", TRANSFER)
def test_a_second_support_draw_reuses_the_pretraining_and_matches_an_uncached_fit(tmp_path, method):
    store = ResultStore(tmp_path / "results")
    outcomes = run_benchmark(RunSpec([method], seeds=[0, 1], **SMOKE), store, threads=1)
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.record.get("failure") for o in outcomes]
    first, second = (o.record for o in outcomes)
    assert second["pretraining"]["reused"] and second["pretraining"]["cache_key"] == first["pretraining"]["cache_key"]
    assert "pretraining.load" in second["timings"] and not any(k.startswith("fit.pretrain") for k in second["timings"])

    # The same run without the harness: `fit` on the full task (support draw 1, training seed 0), nothing cached.
    split = make_split("fashion-mnist", 4, seed=1)
    cls = METHODS.get(method)
    with thread_count(1):
        model = cls(device="cpu")
        model.fit(split.task_for(cls), cls.budget_for("smoke"), 0)
        with torch.no_grad():
            samples = model.sample(40, torch.Generator().manual_seed(derive_seed(1, "sample"))).float()
    expected = (samples * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(stored_samples(store, second), expected.reshape(stored_samples(store, second).shape))


@requires_data("fashion-mnist")
def test_the_key_ignores_the_support_draw_and_follows_everything_pretraining_reads(monkeypatch):
    cls = METHODS.get("vae")
    budget = cls.budget_for("smoke")

    def key(split, budget=budget, train_seed=0, method="vae"):
        return pretraining_key(method, cls, budget, base_only(split.task_for(cls)), train_seed, "cpu")[0]

    seed0, seed1 = make_split("fashion-mnist", 4, seed=0), make_split("fashion-mnist", 4, seed=1)
    assert key(seed0) == key(seed1) == key(make_split("fashion-mnist", 10, seed=3))
    assert key(seed0) != key(make_split("fashion-mnist", 4, seed=0, novel_class=0))  # another base set
    assert key(seed0) != key(seed0, train_seed=1)
    assert key(seed0) != key(seed0, budget=dataclasses.replace(budget, pretrain_steps=budget.pretrain_steps + 1))
    before = key(seed0)
    # Another instruction set (ATEN_CPU_CAPABILITY) computes other floats: its pretraining is not this one.
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "a capability of its own")
    assert key(seed0) != before

    task = base_only(seed1.task_for(cls))
    assert task.support.shape[0] == 0 and task.base_images.shape == seed1.task_for(cls).base_images.shape
    assert task.info.support_indices == () and task.info.seed == -1


@requires_data("fashion-mnist")
def test_a_damaged_entry_is_recomputed_not_loaded(tmp_path):
    split = make_split("fashion-mnist", 4, seed=0)
    plan = plan_run(RunSpec(["vae"], **SMOKE), "vae", split)
    cache = PretrainingCache(tmp_path / "pretrained")
    with thread_count(1):
        first = pretrained_for(plan, NullReporter(), cache)
        assert not first.reused and pretrained_for(plan, NullReporter(), cache).reused
        (entry,) = (tmp_path / "pretrained").glob("vae-*.pt")
        entry.write_bytes(entry.read_bytes()[:-10] + b"0123456789")  # not the bytes its .json names
        again = pretrained_for(plan, NullReporter(), cache)
    assert not again.reused
    for a, b in zip(first.method.model.state_dict().values(), again.method.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@requires_data("fashion-mnist")
def test_training_seeds_are_runs_of_their_own_and_reference_rows_run_once(tmp_path):
    store = ResultStore(tmp_path)
    spec = RunSpec(["vae", "support-copy"], train_seeds=[0, 1], **SMOKE)
    outcomes = run_benchmark(spec, store, threads=1)
    assert [(o.key.method, o.key.train_seed) for o in outcomes] == [("vae", 0), ("support-copy", 0), ("vae", 1)]
    assert store.record_path(outcomes[2].key).name == "seed0-train1.json"
    zero, one = outcomes[0].record, outcomes[2].record
    assert one["key"]["train_seed"] == 1 and one["pretraining"]["cache_key"] != zero["pretraining"]["cache_key"]
    assert not np.array_equal(stored_samples(store, zero), stored_samples(store, one))  # another initialisation
    assert zero["evaluation"]["sample_seed"] == one["evaluation"]["sample_seed"]  # common random numbers


@requires_data("fashion-mnist")
def test_a_record_from_before_training_seeds_is_current_only_at_seed_0():
    """Records without `train_seed` trained at their support draw's seed: at seed 0 that is training seed 0."""
    spec = RunSpec(["vae"], **SMOKE)
    for seed, current in ((0, True), (1, False)):
        plan = plan_run(spec, "vae", make_split("fashion-mnist", 4, seed=seed))
        record = {
            "key": {k: v for k, v in plan.key.to_dict().items() if k != "train_seed"},
            "split": {"sha256": plan.split.info.sha256},
            "method": {"version": plan.method_class.version, "budget": dataclasses.asdict(plan.budget)},
            "evaluation": {"n_samples": plan.n_samples, "settings": plan.settings},
            "metrics": {"mse": {"card": {"version": METRICS.get("mse").version}}},
        }
        assert RunKey.from_dict(record["key"]) == plan.key
        assert (record_config_hash(record, plan.metric_names) == plan.config_hash) is current
