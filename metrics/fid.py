"""Fréchet distance between Gaussian fits of sample and reference features (torch-fidelity's computation).

Heusel et al., GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium, NeurIPS 2017. FID = |mu_s - mu_r|^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)), features
from the domain evaluator (default) or InceptionV3 (`feature_extractor` setting). With no more
images than feature dimensions (n <= d) the covariance is rank-deficient and FID is badly
biased: the value is then flagged.
"""

from metrics import EvalInputs, Metric, MetricResult, register
from metrics._fidelity import FidelitySettings, fidelity_scores


def frechet_distance(inputs: EvalInputs) -> MetricResult:
    scores, card = fidelity_scores(inputs)
    n = min(len(inputs.samples), len(inputs.reference))
    details = {}
    if n <= card["feature_dim"]:  # a covariance of n images has rank at most n - 1
        details["flag"] = (
            f"{n} images <= {card['feature_dim']} feature dimensions: covariance is rank-deficient, FID is biased"
        )
    return MetricResult(float(scores["frechet_inception_distance"]), details, card)


METRIC = register(
    Metric(
        compute=frechet_distance,
        higher_is_better=False,
        needs=frozenset({"reference", "features"}),
        version="1",
        reference="Heusel et al., NeurIPS 2017; torch-fidelity",
        definition=(
            "Fréchet distance between Gaussians fitted to the feature vectors of the samples and of the evaluation "
            "reference (the novel class's test images), computed by torch-fidelity."
        ),
        across_tasks="pooled",
        display_order=110,
        settings=FidelitySettings,
        roles=frozenset({"headline", "ranking"}),
    ),
    __name__,
)
