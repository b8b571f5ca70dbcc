"""LPIPS backtracking on held-out images: how closely the generator can reach unseen images of the class.

Liu, Zhu, Song and Elgammal, Towards Faster and Stabilized GAN Training for High-fidelity
Few-shot Image Synthesis (FastGAN), ICLR 2021; as reported by the IMLE papers. Targets: the
first N evaluation-reference images (the novel class's test images), or the held-out images
when the reference includes training images (the unconditional protocol); see
`metrics/_backtrack.py` for the optimisation and the distance.
"""

from metrics import EvalInputs, Metric, MetricResult, register
from metrics._backtrack import BacktrackSettings, backtrack_score


def held_out_backtrack(inputs: EvalInputs) -> MetricResult:
    if inputs.held_out is not None:  # the reference contains training images (unconditional protocol)
        return backtrack_score(inputs, inputs.held_out, "held-out")
    return backtrack_score(inputs, inputs.reference, "evaluation-reference")


METRIC = register(
    Metric(
        compute=held_out_backtrack,
        higher_is_better=False,
        needs=frozenset({"reference", "features", "capability:latent"}),
        version="1",
        reference="Liu et al., FastGAN, ICLR 2021 (protocol); Zhang et al., LPIPS, CVPR 2018",
        definition=(
            "Mean over held-out reference images of the smallest perceptual distance between the image and the "
            "generator's output after optimising the latent code (Adam, fixed steps, best of restarts)."
        ),
        display_order=210,
        settings=BacktrackSettings,
        roles=frozenset({"headline"}),
    ),
    __name__,
)
