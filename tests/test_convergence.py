"""Where a training curve plateaus: the rule behind the `standard` budgets (bench/harness/convergence.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.harness.cli import app
from bench.harness.convergence import TOLERANCE, plateau, running_median
from bench.harness.store import ResultStore, RunKey

STEPS = np.arange(1, 201) * 50  # 200 block means over 10,000 steps, as `Curve` records them


def exponential(tau: float, rising: bool = False) -> np.ndarray:
    decay = 3.0 * np.exp(-STEPS / tau) + 0.5
    return 4.0 - decay if rising else decay


@pytest.mark.parametrize("rising", [False, True])
def test_an_exponential_settles_where_its_remaining_distance_is_the_tolerance_of_its_travel(rising):
    # Analytically: the distance to the limit is 3 exp(-t / tau), the travel about 3 exp(-50 / tau), so the curve
    # enters the band at t = tau ln(1 / TOLERANCE) + 50 (the limit is reached to 1e-5 within the budget).
    tau = 1000.0
    expected = tau * math.log(1 / TOLERANCE) + 50
    found = plateau(STEPS, exponential(tau, rising))
    assert abs(found.plateau_step - expected) <= 50
    assert found.plateaued and found.steps == 10_000


def test_a_curve_still_falling_at_the_end_has_not_plateaued():
    found = plateau(STEPS, 10.0 - STEPS / 1000)
    assert not found.plateaued and found.plateau_step > 0.9 * found.steps
    slow = plateau(STEPS, exponential(4000.0))  # tau ln 20 = 12,000 steps: beyond the budget
    assert not slow.plateaued


def test_noise_around_a_settled_curve_does_not_move_the_plateau_much():
    tau = 800.0
    clean = plateau(STEPS, exponential(tau)).plateau_step
    noise = np.random.default_rng(0).normal(0.0, 0.03, len(STEPS))  # 1% of the travel
    noisy = plateau(STEPS, exponential(tau) + noise)
    assert noisy.plateaued and abs(noisy.plateau_step - clean) <= 0.05 * 10_000
    # A single spike (a GAN's bad block) is what the median ignores.
    spiked = exponential(tau)
    spiked[150] += 5.0
    assert plateau(STEPS, spiked).plateau_step == clean


def test_the_running_median_of_a_monotone_curve_is_the_curve():
    values = np.cumsum(np.random.default_rng(1).uniform(0, 1, 50))
    assert np.array_equal(running_median(values, 7), values)
    assert running_median(np.array([0.0, 0.0, 9.0, 0.0, 0.0]), 3).tolist() == [0.0] * 5


def test_a_last_point_off_a_flat_curve_moves_only_its_own_smoothed_value():
    values = np.r_[np.ones(99), 5.0]
    smooth = running_median(values, 11)
    assert np.array_equal(smooth[:-1], np.ones(99))  # padding with the end value would pull the last 5 points to 5
    # Near the ends a point's window holds as many points on each side as there are.
    assert running_median(np.array([3.0, 0.0, 1.0, 0.0, 2.0, 0.0, 4.0]), 5).tolist() == [
        3.0,
        1.0,
        1.0,
        0.0,
        1.0,
        2.0,
        4.0,
    ]


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="at least 2 points"):
        plateau([1], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        plateau([1, 2, 3], [1.0, float("nan"), 2.0])


def test_the_curve_command_reads_each_phase_of_stored_runs(tmp_path):
    store = ResultStore(tmp_path / "results")
    key = RunKey("vae", "fashion-mnist/novel9-4shot.v1", "standard", 0)
    settled, falling = exponential(500.0), 10.0 - STEPS / 1000
    log = {
        "pretrain": {"curve": {"step": STEPS.tolist(), "loss": settled.tolist()}},
        # A GAN's phase logs its two players' losses, not a `loss`.
        "finetune": {"curve": {"step": STEPS.tolist(), "d_loss": falling.tolist(), "g_loss": settled.tolist()}},
        "no_curve": {"loss": 1.0},
    }
    store.write({"schema": 1, "status": "ok", "key": key.to_dict(), "training_log": log})
    out = tmp_path / "curves" / "training"
    result = CliRunner().invoke(
        app,
        ["curve", "training", "--methods", "vae", "--profile", "standard"]
        + ["--results-dir", str(tmp_path / "results"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "vae pretrain loss: plateaued" in result.output
    assert "vae finetune d_loss: still moving" in result.output and "vae finetune g_loss: plateaued" in result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert set(summary["methods"]["vae"]) == {"pretrain", "finetune"}
    assert summary["methods"]["vae"]["pretrain"]["loss"]["plateaued"] is True
    assert set(summary["methods"]["vae"]["finetune"]) == {"d_loss", "g_loss"}
    assert out.with_suffix(".png").stat().st_size > 0
    missing = CliRunner().invoke(
        app,
        [
            "curve",
            "training",
            "--methods",
            "dcgan",
            "--profile",
            "standard",
            "--results-dir",
            str(tmp_path / "results"),
        ],
    )
    assert missing.exit_code == 1 and "no stored run" in missing.output
