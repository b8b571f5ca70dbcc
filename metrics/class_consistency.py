"""Class consistency: the fraction of samples the domain evaluator assigns to the novel class.

A generator asked for ankle boots that draws sandals scores low here even when its samples are
sharp. Uses the domain evaluator's argmax over all classes of the dataset.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._features import domain_features


def novel_class_fraction(inputs: EvalInputs) -> MetricResult:
    evaluator = inputs.evaluator
    _, logits = domain_features(inputs, "samples")
    predicted = logits.argmax(1)
    return MetricResult(
        float((predicted == inputs.novel_class).double().mean()),
        {"predicted_class_counts": predicted.bincount(minlength=logits.shape[1]).tolist()},
        {
            "classifier": f"domain evaluator {evaluator.card['architecture']}",
            "classifier_weights_sha256": evaluator.card["weights_sha256"],
            "classifier_test_accuracy": evaluator.card["test_accuracy"],
            "novel_class": inputs.novel_class,
        },
    )


METRIC = register(
    Metric(
        compute=novel_class_fraction,
        higher_is_better=True,
        needs=frozenset({"evaluator", "novel_class"}),
        version="1",
        reference="this benchmark (domain-classifier agreement)",
        definition="Fraction of samples whose domain-evaluator argmax class is the novel class.",
        display_order=170,
        # A fraction that can sit near 0, where the default relative band (10%) is noise-tight.
        tolerance=Tolerance(absolute=0.1),
        roles=frozenset({"headline"}),
    ),
    __name__,
)
