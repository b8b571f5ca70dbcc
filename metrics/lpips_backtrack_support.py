"""LPIPS backtracking on the support images: read next to `lpips_backtrack` as a memorisation diagnostic.

Same optimisation and distance as `lpips_backtrack` (see `metrics/_backtrack.py`), with the k
support images as targets. A generator that reaches its support images far better than
held-out images of the same class has memorised them.
"""

from metrics import EvalInputs, Metric, MetricResult, register
from metrics._backtrack import BacktrackSettings, backtrack_score


def support_backtrack(inputs: EvalInputs) -> MetricResult:
    return backtrack_score(inputs, inputs.support, "support")


METRIC = register(
    Metric(
        compute=support_backtrack,
        higher_is_better=None,
        needs=frozenset({"support", "features", "capability:latent"}),
        version="1",
        reference="Liu et al., FastGAN, ICLR 2021 (protocol); this benchmark (support/held-out gap)",
        definition=(
            "The lpips_backtrack score with the support images as targets; compare with lpips_backtrack "
            "(a much smaller value here means the generator memorised its support set)."
        ),
        display_order=220,
        settings=BacktrackSettings,
    ),
    __name__,
)
