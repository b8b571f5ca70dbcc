"""Aggregating a task set's per-task outcomes: means only over complete sets, pooled values marked."""

import pytest

from bench.harness.evaluation import aggregate_over_tasks, mark_pooled


def _ok(value, flag=None):
    outcome = {"status": "ok", "value": value, "card": {"version": "1"}}
    if flag:
        outcome["flag"] = flag
    return outcome


def test_mean_and_spread_over_tasks():
    result = aggregate_over_tasks([{"mse": _ok(1.0)}, {"mse": _ok(2.0)}, {"mse": _ok(6.0)}], 3)["mse"]
    assert result["status"] == "ok" and result["value"] == pytest.approx(3.0)
    assert result["std_over_tasks"] == pytest.approx((((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3) ** 0.5)
    assert "mean over 3 tasks" in result["card"]["aggregation"]


def test_a_failure_on_any_task_is_never_averaged_away():
    failed = {"status": "error", "error": "ValueError: boom", "card": {"version": "1"}}
    result = aggregate_over_tasks([{"fid": _ok(1.0)}, {"fid": failed}], 2)["fid"]
    assert result["status"] == "error" and result["error"].startswith("1 of 2 tasks") and "boom" in result["error"]
    missing = {"status": "not_applicable", "reason": "no class", "card": {}}
    assert aggregate_over_tasks([{"x": missing}, {"x": missing}], 2)["x"]["reason"] == "2 of 2 tasks: no class"


def test_flags_survive_aggregation_and_pooling_is_flagged():
    result = aggregate_over_tasks([{"m": _ok(1.0, "few images")}, {"m": _ok(2.0)}], 2)["m"]
    assert result["flag"] == "few images"
    pooled = mark_pooled({"fid": _ok(5.0, "rank-deficient"), "kid": {"status": "error", "error": "e", "card": {}}}, 4)
    assert pooled["fid"]["flag"].startswith("rank-deficient; pooled over 4 tasks") and pooled["fid"]["value"] == 5.0
    assert "pooled over 4 tasks" in pooled["kid"]["card"]["aggregation"] and "flag" not in pooled["kid"]
