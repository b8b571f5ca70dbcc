"""Domain-evaluator features and logits of an evaluation's image sets, from its one feature pass.

Used by class_consistency, density, coverage and support_nn_feat; FID, KID and precision/recall read
the same features (metrics/_fidelity.py). Each set is extracted once per evaluation by the harness's
`FeatureBank` (`EvalInputs.features`), as uint8, exactly as the store keeps the samples.
"""

from __future__ import annotations

import torch

from metrics import EvalInputs


def domain_features(
    inputs: EvalInputs, which: str, images: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of `which` in {"samples", "reference", "support"}, or of a derived set named `which` with
    `images`."""
    extracted = inputs.features.extract(which, "domain", images=images)
    return extracted["features"], extracted["logits"]


def feature_card(inputs: EvalInputs) -> dict:
    evaluator = inputs.evaluator
    return {
        "feature_extractor": f"domain evaluator {evaluator.card['architecture']} ({evaluator.card['feature_dim']}-d penultimate layer)",
        "feature_weights_sha256": evaluator.card["weights_sha256"],
        "feature_dim": evaluator.card["feature_dim"],
        "evaluator_test_accuracy": evaluator.card["test_accuracy"],
        "evaluator_trained_on": evaluator.card.get("trained_on"),
    }
