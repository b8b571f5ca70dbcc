"""Coverage (Naeem, Oh, Uh, Choi and Yoo, ICML 2020): the fraction of real images with a sample nearby.

A reference image counts when the nearest sample lies inside its k-NN ball (k = 5) among the
reference features. Copies of the k support images cover only their own neighbourhood, however
many copies there are. See `metrics/_prdc.py`.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._prdc import prdc_scores


def coverage(inputs: EvalInputs) -> MetricResult:
    scores, card = inputs.shared(prdc_scores)
    return MetricResult(scores["coverage"], {}, card)


METRIC = register(
    Metric(
        compute=coverage,
        higher_is_better=True,
        needs=frozenset({"reference", "evaluator"}),
        version="1",
        reference="Naeem et al., Reliable Fidelity and Diversity Metrics for Generative Models, ICML 2020; prdc",
        definition=(
            "Fraction of reference images whose k-NN ball (k=5, domain features) contains at least one sample."
        ),
        across_tasks="pooled",
        display_order=160,
        # A fraction that can sit near 0, where the default relative band (10%) is noise-tight.
        tolerance=Tolerance(absolute=0.1),
        roles=frozenset({"diversity", "headline"}),
    ),
    __name__,
)
