"""Memorisation signal: pixel MSE of each sample to its nearest support image.

Copying the k support images scores 0; a generator that makes new images scores about the
typical distance between two images of the class. Neither direction is "better" (noise scores
high too), so the metric is a diagnostic with no direction: read it next to the reference rows.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._nearest import nearest_by_mse


def support_nearest_mse(inputs: EvalInputs) -> MetricResult:
    _, mse = nearest_by_mse(inputs.samples, inputs.support)
    return MetricResult(float(mse.mean()), {"fraction_below_1e-3": float((mse < 1e-3).double().mean())})


METRIC = register(
    Metric(
        compute=support_nearest_mse,
        higher_is_better=None,
        needs=frozenset({"support"}),
        version="1",
        reference="this benchmark (memorisation diagnostic)",
        definition=(
            "For each sample, the pixel MSE ([0, 1] scale) to its nearest support image; the mean over samples. "
            "0 means the samples are copies of the support set."
        ),
        display_order=410,
        # Exactly 0 for the copy reference rows, where a relative band is no band at all.
        tolerance=Tolerance(absolute=1e-6),
    ),
    __name__,
)
