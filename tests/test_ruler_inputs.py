"""Metrics get the domain evaluator from the harness (`Ruler`), and say why when it is absent or broken."""

import torch

from bench.harness.evaluation import Ruler, evaluate


def _images(n: int, value: float) -> torch.Tensor:
    return torch.full((n, 1, 8, 8), value)


def test_an_evaluator_that_failed_to_load_is_the_error_of_every_metric_that_reads_it():
    ruler = Ruler(space="domain", error="EvaluatorWeightsError: bench/features/weights/x.pt has another sha256")
    outcomes, _ = evaluate(
        _images(6, 0.5),
        reference=_images(6, 0.4),
        support=_images(2, 0.5),
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=["fid", "coverage", "class_consistency", "mse"],
        ruler=ruler,
    )
    for name in ("fid", "coverage", "class_consistency"):
        assert outcomes[name]["status"] == "error" and "EvaluatorWeightsError" in outcomes[name]["error"]
    assert outcomes["mse"]["status"] == "ok"  # a pixel metric does not read the ruler


def test_no_evaluator_makes_its_metrics_not_applicable_with_the_reason_but_another_feature_space_still_scores():
    ruler = Ruler(space="domain", reason="folder:x has no classes, so it has no domain evaluator")
    outcomes, _ = evaluate(
        _images(6, 0.5),
        reference=_images(6, 0.4),
        novel_class=9,
        metric_names=["fid", "density", "class_consistency"],
        ruler=ruler,
    )
    for name in ("fid", "density", "class_consistency"):
        assert outcomes[name]["status"] == "not_applicable" and "no classes" in outcomes[name]["reason"]


def test_a_failed_evaluator_does_not_hide_another_unmet_need():
    ruler = Ruler(space="domain", error="EvaluatorWeightsError: altered file")
    outcomes, _ = evaluate(
        _images(6, 0.5),
        reference=_images(6, 0.4),
        metric_names=["class_consistency"],
        ruler=ruler,
        need_reasons={"novel_class": "the novel characters are not among the evaluator's classes"},
    )
    assert outcomes["class_consistency"]["status"] == "not_applicable"
    assert outcomes["class_consistency"]["reason"] == "the novel characters are not among the evaluator's classes"
