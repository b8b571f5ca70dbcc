"""LPIPS backtracking: by meaning, on generators whose range is known.

A "table" generator decodes z to a softmax mixture of a fixed set of images, so its range is the
convex hull of that set. One whose table is the support set can reach its support images but not
held-out images of the class: the memorisation the support/held-out gap is meant to expose.
"""

import torch
from conftest import requires_data

from bench.features.evaluator import load_domain_evaluator
from bench.harness.evaluation import evaluate
from metrics import EvalInputs
from metrics._backtrack import backtrack_trajectory

pytestmark = requires_data("fashion-mnist")
BACKTRACK = ["lpips_backtrack", "lpips_backtrack_support"]
SETTINGS = {
    "backtrack_images": 8,
    "backtrack_steps": 60,
    "backtrack_restarts": 2,
    "backtrack_lr": 0.5,
    "perceptual_distance": "domain",
}


class TableGenerator:
    capabilities = frozenset({"latent"})

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.latent_dim = len(table)

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(4 * z, dim=1)
        return torch.einsum("nk,kchw->nchw", weights, self.table)


def backtrack_scores(model, split, **overrides):
    outcomes, _ = evaluate(
        split.task.support,
        reference=split.reference,
        support=split.task.support,
        dataset="fashion-mnist",
        novel_class=9,
        model=model,
        metric_names=BACKTRACK,
        seed=0,
        settings={**SETTINGS, **overrides},
    )
    return outcomes


def test_a_memorising_generator_reaches_its_support_but_not_held_out_images(fashion_split):
    outcomes = backtrack_scores(TableGenerator(fashion_split.task.support), fashion_split)
    assert all(outcome["status"] == "ok" for outcome in outcomes.values()), outcomes
    support, held_out = outcomes["lpips_backtrack_support"]["value"], outcomes["lpips_backtrack"]["value"]
    assert support < 0.2 * held_out
    card = outcomes["lpips_backtrack"]["card"]
    assert card["n_targets"] == 8 and card["steps"] == 60 and "domain perceptual distance" in card["distance"]


def test_a_generator_that_covers_the_class_reaches_held_out_images(fashion_split):
    memoriser = backtrack_scores(TableGenerator(fashion_split.task.support), fashion_split)
    covering = backtrack_scores(TableGenerator(fashion_split.reference[:8]), fashion_split)
    assert covering["lpips_backtrack"]["value"] < 0.5 * memoriser["lpips_backtrack"]["value"]


def test_more_optimisation_never_hurts(fashion_split):
    model = TableGenerator(fashion_split.reference[:16])
    short, long = (
        backtrack_scores(model, fashion_split, backtrack_steps=steps)["lpips_backtrack"]["value"] for steps in (5, 80)
    )
    assert long < short


def test_backtracking_is_deterministic_given_the_seed(fashion_split):
    model = TableGenerator(fashion_split.reference[:16])
    first, second = (backtrack_scores(model, fashion_split)["lpips_backtrack"]["value"] for _ in range(2))
    assert first == second


def test_a_method_without_a_latent_generator_is_not_applicable(fashion_split):
    class Implicit:
        capabilities = frozenset()

    outcomes = backtrack_scores(Implicit(), fashion_split)
    for outcome in outcomes.values():
        assert outcome["status"] == "not_applicable" and "latent" in outcome["reason"]


def test_lpips_without_its_backbone_weights_fails_clearly(fashion_split, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    outcomes = backtrack_scores(TableGenerator(fashion_split.task.support), fashion_split, perceptual_distance="lpips")
    error = outcomes["lpips_backtrack"]["reason"]
    assert outcomes["lpips_backtrack"]["status"] == "unavailable"
    assert "alexnet-owt-7be5be79.pth" in error and str(tmp_path / "torch-home") in error


def test_held_out_images_are_the_targets_when_the_reference_includes_seen_ones(fashion_split):
    """The unconditional protocol scores FID against the whole folder (seen images included): backtracking
    must target the held-out images, so a generator that memorised the reference's first images gains nothing."""
    memoriser = TableGenerator(fashion_split.reference[:8])
    held_out = fashion_split.reference[8:16]
    outcomes, _ = evaluate(
        fashion_split.reference[:8],
        reference=fashion_split.reference,
        held_out=held_out,
        dataset="fashion-mnist",
        model=memoriser,
        metric_names=["lpips_backtrack"],
        seed=0,
        settings=SETTINGS,
    )
    reference_only = backtrack_scores(memoriser, fashion_split)["lpips_backtrack"]
    assert outcomes["lpips_backtrack"]["card"]["targets"] == "first 8 held-out images"
    assert outcomes["lpips_backtrack"]["value"] > 5 * reference_only["value"]


def test_the_distance_read_after_t_steps_is_what_a_run_of_t_steps_reports(fashion_split):
    """The budget curve reads one long optimisation at several steps; each reading must be a run of that length."""
    model = TableGenerator(fashion_split.task.support)
    inputs = EvalInputs(
        samples=fashion_split.task.support,
        reference=fashion_split.reference,
        evaluator=load_domain_evaluator("fashion-mnist"),
        model=model,
        seed=0,
        settings=SETTINGS,
    )
    targets = fashion_split.reference[:8]
    long, _ = backtrack_trajectory(inputs, targets, 60, 2, record_at=(10, 30))
    for steps in (10, 30, 60):
        short, _ = backtrack_trajectory(inputs, targets, steps, 2)
        assert torch.equal(long[steps], short[steps])
    assert long[60].mean() < long[10].mean()  # the optimisation descends
    # The metric is the best restart of the full run, averaged over targets.
    outcomes = backtrack_scores(model, fashion_split)
    assert outcomes["lpips_backtrack"]["value"] == float(long[60].min(0).values.mean())
