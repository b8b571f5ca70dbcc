"""Choosing a scoring budget from its measured curve."""

from __future__ import annotations

import json

from conftest import requires_data
from typer.testing import CliRunner

from bench.harness.budgets import cheapest_within
from bench.harness.cli import app
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore


def grid_cost(point: str) -> int:
    steps, restarts = point.split(",")
    return int(steps) * int(restarts)


def curve(values: dict[str, float]) -> dict:
    return {"values": values}


def test_the_cheapest_point_within_the_tolerance_on_every_run_is_chosen():
    fast_converging = curve({"50,1": 0.50, "100,1": 0.41, "100,2": 0.402, "200,3": 0.40})
    slow_converging = curve({"50,1": 0.90, "100,1": 0.60, "100,2": 0.405, "200,3": 0.40})
    # 100x1 is within 2.5% of the long budget on the first run only; 100x2 on both.
    assert cheapest_within({"a": fast_converging}, grid_cost, 0.025) == "100,1"
    assert cheapest_within({"a": fast_converging, "b": slow_converging}, grid_cost, 0.025) == "100,2"
    # A tighter tolerance can only ask for more.
    assert cheapest_within({"a": fast_converging, "b": slow_converging}, grid_cost, 0.001) == "200,3"


def test_an_absolute_tolerance_reads_values_near_zero_in_their_units():
    # AIS values (nats per image of a density) can sit near 0, where a relative tolerance asks for nothing.
    near_zero = curve({"30": -40.0, "100": -2.5, "300": -0.4, "1000": 0.1})
    assert cheapest_within({"a": near_zero}, int, 1.0, absolute=True) == "300"
    assert cheapest_within({"a": near_zero}, int, 0.02) == "1000"


def test_a_curve_of_an_unknown_metric_or_a_missing_run_is_refused(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["curve", "kid", "--methods", "imle"])
    assert result.exit_code == 2 and "unknown curve 'kid' (valid: backtrack, nll, ais, training, fid)" in result.output
    result = runner.invoke(app, ["curve", "fid", "--methods", "imle"])  # it trains: it needs the data named
    assert result.exit_code == 2 and "name the data with --dataset" in result.output
    result = runner.invoke(app, ["curve", "backtrack", "--methods", "imle", "--results-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no stored run" in result.output, result.output


@requires_data("fashion-mnist")
def test_a_backtracking_curve_is_measured_on_a_stored_run(tmp_path):
    results = tmp_path / "results"
    spec = RunSpec(["imle"], dataset="fashion-mnist", profile="smoke", n_samples=20, metrics=["lpips_backtrack"])
    (outcome,) = run_benchmark(spec, ResultStore(results))
    assert outcome.status == "ok" and outcome.record["artifacts"]["checkpoints"]
    out = tmp_path / "curves" / "bt-lr0.05"  # a dot in the name: OUT.json is appended, not substituted
    result = CliRunner().invoke(
        app,
        ["curve", "backtrack", "--methods", "imle", "--profile", "smoke", "--results-dir", str(results)]
        + ["--out", str(out), "--grid", "2,4,8", "--tolerance", "0.5"],
    )
    assert result.exit_code == 0, result.output
    measured = json.loads((out.parent / "bt-lr0.05.json").read_text())
    values = measured["curves"]["imle"]["values"]
    assert set(values) == {f"{t},{r}" for t in (2, 4, 8) for r in range(1, 6)}
    # The best of five restarts is never worse than the first restart alone (the same optimisation, read twice).
    assert all(values[f"{t},5"] <= values[f"{t},1"] for t in (2, 4, 8))
    assert measured["chosen"] in values and (out.parent / "bt-lr0.05.png").is_file()
    # The AIS curve on the same stored model: one value per T, chosen with a tolerance in nats per image.
    out = tmp_path / "curves" / "ais"
    result = CliRunner().invoke(
        app,
        ["curve", "ais", "--methods", "imle", "--profile", "smoke", "--results-dir", str(results)]
        + ["--out", str(out), "--grid", "1,10", "--tolerance", "1"],
    )
    assert result.exit_code == 0, result.output
    measured = json.loads((out.parent / "ais.json").read_text())
    assert set(measured["curves"]["imle"]["values"]) == {"1", "10"} and "nats per image" in measured["rule"]
