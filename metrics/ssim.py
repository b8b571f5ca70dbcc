"""Mean SSIM of each sample to its nearest reference image (scikit-image's structural_similarity).

Wang, Bovik, Sheikh and Simoncelli, Image quality assessment: from error visibility to
structural similarity, IEEE TIP 2004. Pairing: the nearest reference image by pixel MSE (the
same pairing as `mse`). SSIM: scikit-image defaults (7x7 uniform window, K1=0.01, K2=0.03),
`data_range=1.0`, averaged over channels.
"""

import skimage
from skimage.metrics import structural_similarity

from metrics import EvalInputs, Metric, MetricResult, register
from metrics._nearest import nearest_reference


def mean_nearest_ssim(inputs: EvalInputs) -> MetricResult:
    index, _ = nearest_reference(inputs)
    samples = inputs.samples.double().numpy()
    partners = inputs.reference[index].double().numpy()
    n, c, h, w = samples.shape
    # One call over all pairs: every (image, channel) plane is a channel of one stacked image,
    # and scikit-image returns the mean SSIM over channels = the mean over pairs.
    value = structural_similarity(
        samples.reshape(n * c, h, w), partners.reshape(n * c, h, w), data_range=1.0, channel_axis=0
    )
    return MetricResult(
        float(value), card={"implementation": f"scikit-image {skimage.__version__} structural_similarity"}
    )


METRIC = register(
    Metric(
        compute=mean_nearest_ssim,
        higher_is_better=True,
        needs=frozenset({"reference"}),
        version="1",
        reference="Wang et al., IEEE TIP 2004; scikit-image structural_similarity",
        definition=(
            "For each sample, SSIM (scikit-image defaults, data_range=1) to its nearest evaluation-reference "
            "image by pixel MSE; the mean over samples."
        ),
        display_order=330,
        roles=frozenset({"report"}),
    ),
    __name__,
)
