"""Density (Naeem, Oh, Uh, Choi and Yoo, Reliable Fidelity and Diversity Metrics for Generative Models, ICML 2020).

How many reference k-NN balls (k = 5) contain each sample, divided by k, averaged over samples:
a fidelity measure that, unlike k-NN precision, outliers in the reference set do not inflate.
See `metrics/_prdc.py`.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._prdc import prdc_scores


def density(inputs: EvalInputs) -> MetricResult:
    scores, card = inputs.shared(prdc_scores)
    return MetricResult(scores["density"], {}, card)


METRIC = register(
    Metric(
        compute=density,
        higher_is_better=True,
        needs=frozenset({"reference", "evaluator"}),
        version="1",
        reference="Naeem et al., Reliable Fidelity and Diversity Metrics for Generative Models, ICML 2020; prdc",
        definition=(
            "Mean over samples of the number of reference k-NN balls (k=5, domain features) containing the sample, "
            "divided by k; about 1 for real images, can exceed 1."
        ),
        across_tasks="pooled",
        display_order=150,
        # A fraction that can sit near 0, where the default relative band (10%) is noise-tight.
        tolerance=Tolerance(absolute=0.1),
    ),
    __name__,
)
