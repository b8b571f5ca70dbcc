"""Memorisation in feature space: distance of each sample to the nearest small shift of a support image.

    support_nn_feat = (1/n) sum_i  min_{k in K, |dx|,|dy| <= s}  || f(s_i) - f(shift(x_k, dx, dy)) ||_2

with f the domain evaluator's 128-d features (the FID feature space) and the shifted support set
of `support_nn_shift_mse` (integer shifts up to `shift_pixels`, default 2, borders replicated).
Pixel distances let a copy hide behind a shift or a change of brightness; these features move
little under brightness changes, but they are not shift-invariant, so the support set is
shifted too. Measured on Fashion-MNIST (1,000 images each, 4 support boots): support copies 0,
copies shifted by up to 2 px with brightness +-10% 6.6, unseen real boots 21.2.

A diagnostic with no better direction (noise is far from the support set too): read it against
the reference rows.
"""

import torch

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._features import domain_features, feature_card
from metrics._nearest import ShiftSettings, shifted_copies


def support_nearest_feature_distance(inputs: EvalInputs) -> MetricResult:
    max_shift = inputs.settings_as(ShiftSettings).shift_pixels
    samples, _ = domain_features(inputs, "samples")
    support, _ = domain_features(
        inputs, f"support shifted by up to {max_shift}", shifted_copies(inputs.support, max_shift)
    )
    nearest = torch.cdist(samples.double(), support.double()).min(dim=1).values
    return MetricResult(
        float(nearest.mean()),
        {"std": float(nearest.std()) if len(nearest) > 1 else 0.0},
        {
            **feature_card(inputs),
            "distance": "euclidean in feature space",
            "max_shift_pixels": max_shift,
            "padding": "replicate",
        },
    )


METRIC = register(
    Metric(
        compute=support_nearest_feature_distance,
        higher_is_better=None,
        needs=frozenset({"support", "evaluator"}),
        version="1",
        reference="this benchmark (memorisation diagnostic)",
        definition=(
            "For each sample, the Euclidean distance in the domain evaluator's feature space to the nearest support "
            "image shifted by up to `shift_pixels` (default 2) pixels; the mean over samples. 0 for copies, small for shifted or re-lit copies."
        ),
        display_order=430,
        settings=ShiftSettings,
        # Exactly 0 for the copy reference rows, where a relative band is no band at all.
        tolerance=Tolerance(absolute=1e-6),
        roles=frozenset({"copying"}),
    ),
    __name__,
)
