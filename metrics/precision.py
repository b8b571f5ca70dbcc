"""Improved precision (Kynkäänniemi et al., NeurIPS 2019), k = 3, computed by torch-fidelity.

The fraction of samples that fall inside the reference manifold: a sample counts when it
lies within the distance from some reference image to that image's 3rd nearest reference
neighbour. High precision = samples look like the class; it says nothing about diversity.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._fidelity import FidelitySettings, precision_recall_score


def improved_precision(inputs: EvalInputs) -> MetricResult:
    value, card = precision_recall_score(inputs, "precision")
    return MetricResult(value, {}, card)


METRIC = register(
    Metric(
        compute=improved_precision,
        higher_is_better=True,
        needs=frozenset({"reference", "features"}),
        version="1",
        reference="Kynkäänniemi et al., Improved Precision and Recall Metric for Assessing Generative Models, NeurIPS 2019",
        definition=(
            "Fraction of samples inside the union of k-NN balls (k=3) of the reference features "
            "(samples that look like the class), computed by torch-fidelity."
        ),
        across_tasks="pooled",
        display_order=130,
        settings=FidelitySettings,
        # A fraction that can sit near 0, where the default relative band (10%) is noise-tight.
        tolerance=Tolerance(absolute=0.1),
        roles=frozenset({"headline"}),
    ),
    __name__,
)
