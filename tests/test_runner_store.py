import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, failing_method, requires_data

from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore, RunKey
from methods import METHODS

pytestmark = requires_data("fashion-mnist")

SMOKE = dict(dataset="fashion-mnist", shots=4, profile="smoke", n_samples=50)


def test_two_seeds_write_two_complete_records(tmp_path):
    store = ResultStore(tmp_path)
    outcomes = run_benchmark(RunSpec(["vae"], seeds=[0, 1], **SMOKE), store)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    for seed in (0, 1):
        record = store.load(RunKey("vae", "fashion-mnist/novel9-4shot.v1", "smoke", seed))
        assert record["split"]["seed"] == seed and len(record["split"]["support_indices"]) == 4
        assert record["split"]["sha256"] and record["method"]["config"]["latent_dim"] > 0
        assert record["method"]["budget"] == {"pretrain_steps": 20, "finetune_steps": 10, "pool_size": 32}
        assert {"fit", "fit.finetune", "sample", "evaluate", "split", "store", "total"} <= set(record["timings"])
        # Pretraining ran here, or was loaded from the cache (the second seed always loads the first's).
        reused = record["pretraining"]["reused"]
        assert ("pretraining.load" in record["timings"]) == reused != ("fit.pretrain" in record["timings"])
        assert reused or seed == 0
        assert {"torch", "torch_threads"} <= set(record["environment"]) and "commit" in record["code"]
        assert {m["status"] for m in record["metrics"].values()} == {"ok"}
        assert (tmp_path / record["artifacts"]["grid"]).is_file()
        assert (tmp_path / record["artifacts"]["samples"]).is_file()
        # The VAE embeds images: its latent-space plot and loss curves are saved with the run.
        assert (tmp_path / record["artifacts"]["latent_plot"]).is_file() and "store.latent_plot" in record["timings"]
        assert (tmp_path / record["artifacts"]["loss_curves"]).is_file()


def test_reruns_skip_finished_runs_unless_overwriting(tmp_path):
    store = ResultStore(tmp_path)
    spec = RunSpec(["vae"], seeds=[0], **SMOKE)
    run_benchmark(spec, store)
    path = store.record_path(RunKey("vae", "fashion-mnist/novel9-4shot.v1", "smoke", 0))
    before = path.stat().st_mtime_ns
    assert run_benchmark(spec, store)[0].status == "skipped" and path.stat().st_mtime_ns == before
    spec.overwrite = True
    assert run_benchmark(spec, store)[0].status == "ok" and path.stat().st_mtime_ns != before


def test_same_seed_gives_identical_scores_in_separate_stores(tmp_path):
    records = []
    for name in ("a", "b"):
        outcome = run_benchmark(RunSpec(["vae"], seeds=[1], **SMOKE), ResultStore(tmp_path / name))[0]
        records.append(outcome.record)
    scores = [{k: v["value"] for k, v in r["metrics"].items()} for r in records]
    assert scores[0] == scores[1]
    samples = [(tmp_path / n / r["artifacts"]["samples"]).read_bytes() for n, r in zip("ab", records)]
    assert samples[0] == samples[1]


def test_a_diverged_run_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "diverging", failing_method("pretrain: loss became nan at step 3"))
    store = ResultStore(tmp_path)
    outcomes = run_benchmark(RunSpec(["diverging", "vae"], seeds=[0], **SMOKE), store)
    assert [o.status for o in outcomes] == ["failed", "ok"]
    failed = store.load(outcomes[0].key)
    assert failed["failure"]["diverged"] is True and "nan at step 3" in failed["failure"]["reason"]
    assert "metrics" not in failed
    # A failed run is tried again on the next sweep; a finished one is not.
    assert [o.status for o in run_benchmark(RunSpec(["diverging", "vae"], seeds=[0], **SMOKE), store)] == [
        "failed",
        "skipped",
    ]


def test_interrupted_record_write_leaves_nothing(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write({"schema": 1, "status": "ok", "key": RunKey("vae", "x/y.v1", "smoke", 0).to_dict()})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_killed_run_leaves_no_record(tmp_path):
    marker = tmp_path / "fitting"
    script = textwrap.dedent(f"""
        import time, torch
        from dataclasses import dataclass
        from bench.sdk.method import PROFILES, Method
        from bench.harness.executor import run_benchmark
        from bench.harness.plan import RunSpec
        from bench.harness.store import ResultStore
        from methods import METHODS

        @dataclass
        class C: pass
        @dataclass(frozen=True)
        class B: steps: int = 1

        class Slow(Method):
            Config, Budget = C, B
            profiles = {{p: B() for p in PROFILES}}
            def fit(self, task, budget, seed):
                open({str(marker)!r}, "w").close()
                time.sleep(600)
            def sample(self, n, generator):
                return torch.zeros(n, 1, 28, 28)

        METHODS._entries["slow"] = Slow
        run_benchmark(RunSpec(["vae", "slow"], dataset="fashion-mnist", seeds=[0], profile="smoke", n_samples=20),
                      ResultStore({str(tmp_path / "results")!r}))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), "the run never reached fit()"
    process.send_signal(signal.SIGKILL)
    process.wait()
    records = sorted(p.name for p in (tmp_path / "results" / "runs").rglob("*") if p.is_file())
    # The finished vae run is stored; the killed run left neither a record nor a temporary file.
    assert records == ["seed0.json"]
    assert json.loads(next((tmp_path / "results" / "runs").rglob("seed0.json")).read_text())["key"]["method"] == "vae"


def _measured_on_other_files(record):
    record["split"]["sha256"] = "0" * 64


def _older_metric_version(record):
    record["metrics"]["mse"]["card"]["version"] = "0"


def _metric_missing(record):
    del record["metrics"]["ssim"]


def _other_evaluation_settings(record):
    record["evaluation"]["settings"]["backtrack_steps"] += 1


@pytest.mark.parametrize(
    "change", [_measured_on_other_files, _older_metric_version, _metric_missing, _other_evaluation_settings]
)
def test_a_stored_run_measured_differently_is_stale_and_rerun(tmp_path, change):
    store = ResultStore(tmp_path)
    spec = RunSpec(["vae"], seeds=[0], metrics=["mse", "ssim"], **SMOKE)
    run_benchmark(spec, store)
    key = RunKey("vae", "fashion-mnist/novel9-4shot.v1", "smoke", 0)
    fresh = store.load(key)
    stale = json.loads(json.dumps(fresh))
    change(stale)
    store.write(stale)
    assert run_benchmark(spec, store)[0].status == "ok"  # run again, not "skipped"
    assert store.load(key)["metrics"].keys() == fresh["metrics"].keys()
    assert store.load(key)["split"] == fresh["split"] and store.load(key)["evaluation"] == fresh["evaluation"]
