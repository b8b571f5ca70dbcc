"""FID over training (`bench curve fid`): the probe follows a fit without changing it."""

import math

import pytest
import torch
from conftest import requires_data

from bench.harness.training_fid import TrainingCurveError, fid_over_training, write_fid_curve
from methods import METHODS


def _fit(task, probe=None):
    method = METHODS.get("adaimle")()
    method.training_probe = probe
    method.fit(task, method.budget_for("smoke"), 0)
    return method


@requires_data("fashion-mnist")
def test_a_fit_with_a_probe_ends_in_the_same_model_as_one_without(fashion_split):
    seen = []

    def probe(method, phase, step, total):
        seen.append((phase, step, total))
        method.generator_net.eval()  # what sampling may do; the curve's probe restores modes, this one need not
        method.sample(7, torch.Generator().manual_seed(step))
        method.generator_net.train()

    probed, plain = _fit(fashion_split.task, probe), _fit(fashion_split.task)
    rounds = METHODS.get("adaimle").budget_for("smoke").rounds
    assert seen == [("support", step, rounds) for step in range(rounds + 1)]
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(probed.sample(16, g()), plain.sample(16, g()))


@requires_data("fashion-mnist")
def test_the_curve_scores_every_checkpoint_it_is_asked_for_and_the_last(tmp_path):
    result = fid_over_training(["imle"], "fashion-mnist", 4, "smoke", 0, every=2, samples=40)
    curve = result["curves"]["imle"]
    rounds = METHODS.get("imle").budget_for("smoke").rounds
    assert curve["step"] == sorted({*range(0, rounds + 1, 2), rounds})
    assert all(math.isfinite(v) and v > 0 for v in curve["value"]) and curve["card"]["n_samples"] == 40
    json_path, png_path = write_fid_curve(result, tmp_path / "curve")
    assert json_path.is_file() and png_path.stat().st_size > 1000


def test_a_method_without_checkpoints_is_refused_naming_those_with(fashion_split):
    with pytest.raises(TrainingCurveError, match="reports no training checkpoints .*adaimle"):
        fid_over_training(["vae"], "fashion-mnist", 4, "smoke", 0, every=1, samples=40)
