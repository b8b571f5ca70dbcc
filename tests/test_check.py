"""`bench check` across machines: card and seed set must match, unavailable parts are skipped, tolerances
can come from the spread measured between two machines' results."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from bench.harness.check import (
    BASELINE_SCHEMA,
    NOT_COMPARABLE,
    OK,
    REGRESSION,
    SKIPPED,
    SPREAD_SAFETY,
    BaselineError,
    check,
    write_baseline,
)
from bench.harness.cli import app
from bench.harness.leaderboard import card_fingerprint
from bench.harness.store import ResultStore

SPLIT = "fashion-mnist/novel9-4shot.v1"
CARD = {"n_samples": 1000, "feature_weights_sha256": "aaaa"}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(value, card=CARD):
    return {"status": "ok", "value": value, "card": dict(card)}


def record(method, seed, status="ok", **metrics):
    """A run record with the given metric outcomes (a number is an `ok` outcome measured with CARD)."""
    rec = {
        "schema": 1,
        "key": {"method": method, "split_id": SPLIT, "profile": "smoke", "seed": seed},
        "status": status,
        "method": {"name": method, "is_reference": False},
        "environment": {"platform": "Linux-test", "torch": "2.x", "torch_threads": 2},
    }
    if status == "ok":
        rec["metrics"] = {name: ok(o) if isinstance(o, (int, float)) else o for name, o in metrics.items()}
    else:
        rec["failure"] = {"reason": "diverged"}
    return rec


def make_store(path, records):
    store = ResultStore(path)
    for rec in records:
        store.write(rec)
    return store


@pytest.fixture
def baseline(tmp_path):
    """A baseline of vae's mse and brisque over seeds 0 and 1 (mse mean 0.06, brisque mean 30)."""
    source = make_store(
        tmp_path / "a", [record("vae", 0, mse=0.05, brisque=29.0), record("vae", 1, mse=0.07, brisque=31.0)]
    )
    path = tmp_path / "baseline.json"
    assert write_baseline(source, path, relative=0.1, absolute=0.0) == 2
    return path


def rows_by_metric(store, path):
    return {row.metric: row for row in check(store, path)}


def test_the_baseline_stores_each_entrys_card_and_seeds(baseline):
    data = json.loads(baseline.read_text())
    assert data["schema"] == BASELINE_SCHEMA
    mse = next(e for e in data["entries"] if e["metric"] == "mse")
    assert mse["card"] == card_fingerprint(CARD) and mse["seeds"] == [0, 1]
    assert mse["mean"] == pytest.approx(0.06)


def test_a_seed_set_mismatch_is_not_comparable_and_fails_only_with_strict(tmp_path, baseline):
    results = tmp_path / "current"
    make_store(results, [record("vae", 0, mse=0.05, brisque=29.0)])
    row = rows_by_metric(ResultStore(results), baseline)["mse"]
    assert row.status == NOT_COMPARABLE and "seeds 1 missing" in row.reason and not row.regressed
    result = invoke("check", "--baseline", baseline, "--results-dir", results)
    assert result.exit_code == 0, result.output
    assert "2 checked, 0 regressions, 2 not comparable, 0 skipped" in result.output
    result = invoke("check", "--baseline", baseline, "--results-dir", results, "--strict")
    assert result.exit_code == 1 and "not comparable: vae mse" in result.output
    # An extra seed changes the mean too: not comparable either, and named.
    make_store(results, [record("vae", 1, mse=0.07, brisque=31.0), record("vae", 2, mse=0.5, brisque=31.0)])
    row = rows_by_metric(ResultStore(results), baseline)["mse"]
    assert row.status == NOT_COMPARABLE and "seeds 2 extra" in row.reason


def test_a_card_mismatch_is_not_comparable_and_fails_only_with_strict(tmp_path, baseline):
    other = {**CARD, "feature_weights_sha256": "bbbb"}  # another machine's evaluator weights
    results = tmp_path / "current"
    make_store(results, [record("vae", s, mse=ok(9.9, other), brisque=30.0) for s in (0, 1)])
    rows = rows_by_metric(ResultStore(results), baseline)
    assert rows["brisque"].status == OK
    assert rows["mse"].status == NOT_COMPARABLE
    assert card_fingerprint(CARD) in rows["mse"].reason and card_fingerprint(other) in rows["mse"].reason
    # Seeds in a card do not make it another card.
    make_store(results, [record("vae", s, mse=ok(0.06, {**CARD, "sampling_seed": s}), brisque=30.0) for s in (0, 1)])
    assert rows_by_metric(ResultStore(results), baseline)["mse"].status == OK
    make_store(results, [record("vae", s, mse=ok(9.9, other), brisque=30.0) for s in (0, 1)])
    result = invoke("check", "--baseline", baseline, "--results-dir", results)
    assert result.exit_code == 0 and "2 checked, 0 regressions, 1 not comparable, 0 skipped" in result.output
    assert invoke("check", "--baseline", baseline, "--results-dir", results, "--strict").exit_code == 1


def test_an_unavailable_outcome_is_skipped_with_its_reason_even_with_strict(tmp_path, baseline):
    reason = "BRISQUE model files not found: /usr/share/opencv4/quality/brisque_model_live.yml"
    results = tmp_path / "current"
    make_store(
        results,
        [record("vae", s, mse=0.06, brisque={"status": "unavailable", "reason": reason, "card": CARD}) for s in (0, 1)],
    )
    row = rows_by_metric(ResultStore(results), baseline)["brisque"]
    assert row.status == SKIPPED and reason in row.reason and not row.regressed
    for flags in ([], ["--strict"]):
        result = invoke("check", "--baseline", baseline, "--results-dir", results, *flags)
        assert result.exit_code == 0, result.output
        assert "2 checked, 0 regressions, 0 not comparable, 1 skipped" in result.output


def test_an_error_a_failed_run_or_a_missing_result_is_a_regression(tmp_path, baseline):
    results = tmp_path / "current"
    make_store(
        results,
        [
            record("vae", 0, mse=0.06, brisque={"status": "error", "error": "ValueError: boom", "card": CARD}),
            record("vae", 1, mse=0.06, brisque=30.0),
        ],
    )
    rows = rows_by_metric(ResultStore(results), baseline)
    assert rows["brisque"].status == REGRESSION and "boom" in rows["brisque"].reason
    make_store(results, [record("vae", 1, status="failed")])
    rows = rows_by_metric(ResultStore(results), baseline)
    assert rows["mse"].status == REGRESSION and "failed" in rows["mse"].reason
    empty = tmp_path / "empty"
    rows = rows_by_metric(ResultStore(empty), baseline)
    assert all(r.status == REGRESSION and r.reason.startswith("missing") for r in rows.values())
    result = invoke("check", "--baseline", baseline, "--results-dir", empty)
    assert result.exit_code == 1 and "2 checked, 2 regressions, 0 not comparable, 0 skipped" in result.output


def test_a_real_move_beyond_tolerance_is_a_regression(tmp_path, baseline):
    # mse is lower-is-better with 10% relative tolerance: 0.06 may rise to 0.066.
    results = tmp_path / "current"
    make_store(results, [record("vae", 0, mse=0.064, brisque=29.0), record("vae", 1, mse=0.068, brisque=31.0)])
    assert rows_by_metric(ResultStore(results), baseline)["mse"].status == OK
    make_store(results, [record("vae", 0, mse=0.065, brisque=29.0), record("vae", 1, mse=0.069, brisque=31.0)])
    rows = rows_by_metric(ResultStore(results), baseline)
    assert rows["mse"].status == REGRESSION and rows["brisque"].status == OK
    result = invoke("check", "--baseline", baseline, "--results-dir", results, "--strict")
    assert result.exit_code == 1 and "regression: vae mse" in result.output
    assert "2 checked, 1 regressions, 0 not comparable, 0 skipped" in result.output


def test_an_old_schema_baseline_says_to_regenerate_it(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "entries": [{"split_id": SPLIT, "profile": "smoke", "method": "vae", "metric": "mse", "mean": 0.06}],
            }
        )
    )
    with pytest.raises(BaselineError, match="regenerate it with `bench baseline"):
        check(ResultStore(tmp_path / "r"), path)
    result = invoke("check", "--baseline", path, "--results-dir", tmp_path / "r")
    assert result.exit_code == 2 and "regenerate it with `bench baseline" in " ".join(result.output.split())


# Two machines' means of mse over seeds 0 and 1: machine A, machine C.
MACHINE_A = {
    "vae": (0.05, 0.07),
    "gan": (0.09, 0.11),
    "cgan": (0.02, 0.02),
    "dcgan": (0.05, 0.05),
    "infogan": (0.05, 0.05),
}
MACHINE_C = {"vae": (0.052, 0.072), "gan": (0.085, 0.105), "cgan": (0.023, 0.023)}


@pytest.fixture
def spread_baseline(tmp_path):
    a = make_store(tmp_path / "a", [record(m, s, mse=v[s], ssim=0.3) for m, v in MACHINE_A.items() for s in (0, 1)])
    c = make_store(
        tmp_path / "c",
        [record(m, s, mse=v[s], ssim=0.3) for m, v in MACHINE_C.items() for s in (0, 1)]
        # Not the same measurement (another card) or not the same seeds: not part of the spread.
        + [record("dcgan", s, mse=ok(0.5, {**CARD, "n_samples": 10}), ssim=0.3) for s in (0, 1)]
        + [record("infogan", 0, mse=0.9, ssim=0.3)],
    )
    path = tmp_path / "baseline.json"
    result = invoke(
        "baseline", "--out", path, "--results-dir", a.root, "--spread-from", c.root, "--spread-note", "avx2 run"
    )
    assert result.exit_code == 0, result.output
    return path


def planted_spread():
    """The largest absolute and relative difference of the mse means, computed from the planted values."""
    diffs = {m: abs(statistics.mean(MACHINE_A[m]) - statistics.mean(MACHINE_C[m])) for m in MACHINE_C}
    return max(diffs.values()), max(diffs[m] / statistics.mean(MACHINE_A[m]) for m in MACHINE_C)


def test_the_spread_tolerance_is_safety_times_the_largest_planted_difference(spread_baseline):
    largest, largest_relative = planted_spread()
    assert largest == pytest.approx(0.005) and largest_relative == pytest.approx(0.15)  # gan's and cgan's
    data = json.loads(spread_baseline.read_text())
    mse = data["spread"]["metrics"]["mse"]
    assert mse["n_entries"] == 3  # dcgan (other card) and infogan (other seeds) are not the same measurement
    assert mse["spread"]["absolute"] == pytest.approx(largest, rel=1e-9)
    assert mse["spread"]["relative"] == pytest.approx(largest_relative, rel=1e-9)
    assert mse["tolerance"]["absolute"] == pytest.approx(SPREAD_SAFETY * largest, rel=1e-9)
    assert mse["tolerance"]["relative"] == pytest.approx(SPREAD_SAFETY * largest_relative, rel=1e-9)
    assert SPREAD_SAFETY * largest_relative > 0.1  # the measured spread, not the default, sets the tolerance
    # No spread in ssim: the default stays.
    assert data["spread"]["metrics"]["ssim"]["tolerance"] == {"absolute": 0.0, "relative": 0.1}
    assert data["spread"]["safety"] == SPREAD_SAFETY and data["spread"]["note"] == "avx2 run"
    assert data["spread"]["environments"]["spread_from"] == ["Linux-test, torch 2.x, 2 threads"]
    for entry in data["entries"]:
        assert entry["tolerance"] == data["spread"]["metrics"][entry["metric"]]["tolerance"]


@pytest.mark.parametrize("method", ["gan", "cgan"])  # the relative bound decides for gan, the absolute one for cgan
def test_a_move_just_inside_the_spread_tolerance_passes_and_just_outside_fails(tmp_path, spread_baseline, method):
    largest, largest_relative = planted_spread()
    mean = statistics.mean(MACHINE_A[method])
    tolerance = max(SPREAD_SAFETY * largest, SPREAD_SAFETY * largest_relative * mean)
    assert tolerance > 0.1 * mean  # wider than the default tolerance
    for factor, exit_code in ((1 - 1e-6), 0), ((1 + 1e-6), 1):
        results = tmp_path / f"moved{factor}"
        make_store(
            results,
            [
                record(m, s, mse=v[s] + (tolerance * factor if m == method else 0.0), ssim=0.3)
                for m, v in MACHINE_A.items()
                for s in (0, 1)
            ],
        )
        rows = {(r.method, r.metric): r for r in check(ResultStore(results), spread_baseline)}
        assert rows[(method, "mse")].tolerance == pytest.approx(tolerance, rel=1e-9)
        assert rows[(method, "mse")].status == (OK if exit_code == 0 else REGRESSION)
        result = invoke("check", "--baseline", spread_baseline, "--results-dir", results)
        assert result.exit_code == exit_code, result.output


def test_a_spread_source_without_the_same_sweep_is_refused(tmp_path):
    a = make_store(tmp_path / "a", [record("vae", 0, mse=0.06)])
    c = make_store(tmp_path / "c", [record("vae", 1, mse=0.06)])  # another seed: nothing to compare
    result = invoke("baseline", "--out", tmp_path / "b.json", "--results-dir", a.root, "--spread-from", c.root)
    assert result.exit_code == 2 and "nothing to measure the spread on" in " ".join(result.output.split())
    assert not (tmp_path / "b.json").exists()


def test_differences_inside_the_absolute_floor_do_not_widen_the_relative_band():
    from bench.harness.check import measure_spread

    def entry(method, metric, mean):
        return {
            "split_id": SPLIT,
            "profile": "smoke",
            "method": method,
            "metric": metric,
            "mean": mean,
            "card": "c",
            "seeds": [0],
        }

    here = [entry("gan", "precision", 0.010), entry("vae", "precision", 0.50)]
    there = [entry("gan", "precision", 0.005), entry("vae", "precision", 0.30)]
    # 0.005 of 0.010 is half, but inside a 0.1 absolute floor; 0.2 of 0.5 (0.4) is outside it.
    spread = measure_spread(here, there, lambda metric: 0.1)["precision"]
    assert spread["absolute"] == pytest.approx(0.2) and spread["relative"] == pytest.approx(0.4)
    assert measure_spread(here, there)["precision"]["relative"] == pytest.approx(0.5)  # without a floor
