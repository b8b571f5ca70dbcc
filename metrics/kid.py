"""Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel, averaged over subsets (torch-fidelity).

Binkowski et al., Demystifying MMD GANs, ICLR 2018. Kernel k(x, y) = (x.y / d + 1)^3; 100
random subsets of size min(1000, max(2, min(n_samples, n_reference) // 2)) (half the smaller set, so
subsets differ and their std means something);
value = mean over subsets, `std` = their standard deviation.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._fidelity import FidelitySettings, fidelity_scores


def kernel_distance(inputs: EvalInputs) -> MetricResult:
    scores, card = fidelity_scores(inputs)
    return MetricResult(
        float(scores["kernel_inception_distance_mean"]), {"std": float(scores["kernel_inception_distance_std"])}, card
    )


METRIC = register(
    Metric(
        compute=kernel_distance,
        higher_is_better=False,
        needs=frozenset({"reference", "features"}),
        version="1",
        reference="Binkowski et al., ICLR 2018; torch-fidelity",
        definition=(
            "Unbiased MMD^2 between sample and reference features with the kernel (x.y/d + 1)^3, mean (and std) over "
            "100 random subsets of half the smaller set (at most 1000), computed by torch-fidelity."
        ),
        across_tasks="pooled",
        display_order=120,
        settings=FidelitySettings,
        # Large values that move a lot between small samples (smoke: 200 samples).
        tolerance=Tolerance(absolute=500.0),
        roles=frozenset({"headline"}),
    ),
    __name__,
)
