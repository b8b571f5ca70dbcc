"""Domain-evaluator features and logits of an evaluation's image sets, computed once and shared.

Used by class_consistency, density, coverage and support_nn_feat (FID, KID and precision/recall
get theirs inside torch-fidelity's pass). Samples are quantised to 8 bits first, as stored.
"""

from __future__ import annotations

import torch

from metrics import EvalInputs


def domain_features(inputs: EvalInputs, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of `which` in {"samples", "reference", "support"}."""
    key = ("domain_features", which)
    if key not in inputs.cache:
        images = getattr(inputs, which)
        if which == "samples":
            images = (images.clamp(0, 1) * 255).round() / 255  # the same quantisation as the stored samples
        inputs.cache[key] = inputs.evaluator.features_and_logits(images)
    return inputs.cache[key]


def feature_card(inputs: EvalInputs) -> dict:
    evaluator = inputs.evaluator
    return {
        "feature_extractor": f"domain evaluator {evaluator.card['architecture']} ({evaluator.card['feature_dim']}-d penultimate layer)",
        "feature_weights_sha256": evaluator.card["weights_sha256"],
        "feature_dim": evaluator.card["feature_dim"],
        "evaluator_test_accuracy": evaluator.card["test_accuracy"],
        "evaluator_trained_on": evaluator.card.get("trained_on"),
    }
