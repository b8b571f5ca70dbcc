"""Nearest-reference MSE: how far each sample is from the closest real image of the novel class.

As used in Table 1 of "Few Shot Learning for Image Generation" (MSE/SSIM/BRISQUE), with the
nearest-neighbour pairing made explicit so the number is reproducible.
"""

from metrics import EvalInputs, Metric, MetricResult, register
from metrics._nearest import nearest_reference


def nearest_reference_mse(inputs: EvalInputs) -> MetricResult:
    _, mse = nearest_reference(inputs)
    return MetricResult(float(mse.mean()), {"std": float(mse.std()) if len(mse) > 1 else 0.0})


METRIC = register(
    Metric(
        compute=nearest_reference_mse,
        higher_is_better=False,
        needs=frozenset({"reference"}),
        version="1",
        reference="Few Shot Learning for Image Generation (FIGR report), Table 1",
        definition=(
            "For each sample, its nearest evaluation-reference image by pixel MSE; "
            "the mean of those MSEs, on the [0, 1] pixel scale."
        ),
        display_order=320,
        roles=frozenset({"report"}),
    ),
    __name__,
)
