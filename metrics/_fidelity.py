"""One torch-fidelity pass shared by fid, kid, precision and recall.

torch-fidelity computes all four from one feature extraction per input. Two feature spaces:

- `domain` (default, offline): the dataset's domain evaluator, handed in as `EvalInputs.evaluator`
  and registered with torch-fidelity by the feature layer (`bench/features/fidelity_extractor.py`);
  features are its 128-d penultimate layer.
- `inception-v3-compat`: torch-fidelity's standard InceptionV3 (the numbers papers call FID),
  grey-scale images repeated to 3 channels and resized to 299 by torch-fidelity. Needs the
  weights file in torch's hub cache (torch-fidelity downloads it when online).

Images reach torch-fidelity as uint8 (the samples rounded to 0..255, exactly what the store
keeps), so scoring a stored sample file reproduces the run's numbers. Settings: `FidelitySettings`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from metrics import EvalInputs, MetricSettings, fixed_setting
from metrics._features import feature_card
from metrics._weights import download_weights, hub_checkpoint

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
PRC_NEIGHBOURHOOD = 3
PRC_BATCH_SIZE = 1000  # rows of each distance block: 1,000 x 50,000 samples is 200 MB; torch-fidelity's default 10,000 peaked at 10 GB


@dataclass(frozen=True)
class FidelitySettings(MetricSettings):
    """Read by fid, kid, precision and recall (one torch-fidelity pass for the four)."""

    feature_extractor: str | None = fixed_setting(
        None,
        f"feature space: `domain` or `{INCEPTION_EXTRACTOR}`; None: the dataset's (InceptionV3 where it has no "
        "domain evaluator)",
    )


def inception_weights_path() -> Path:
    return hub_checkpoint(INCEPTION_WEIGHTS)


def fidelity_scores(inputs: EvalInputs) -> tuple[dict, dict]:
    """torch-fidelity's FID, KID and precision/recall of samples vs reference, and their card.

    One feature extraction per image set (`EvalInputs.features`, shared with every other feature metric), then
    torch-fidelity's own functions on those features, with the arguments `torch_fidelity.calculate_metrics` takes:
    the same values it gives on the same images. Share it: `inputs.shared(fidelity_scores)`."""
    settings = inputs.settings_as(FidelitySettings)
    n_samples, n_reference = len(inputs.samples), len(inputs.reference)
    # Half the smaller set (at most torch-fidelity's 1,000): subsets as large as the set would all be
    # the same set, and the KID std over subsets would say nothing.
    subset = min(KID_MAX_SUBSET, max(2, min(n_samples, n_reference) // 2))  # 2: the smallest torch-fidelity accepts
    space = settings.feature_extractor or inputs.feature_space
    if space == "domain":
        weights = None
        card = {**feature_card(inputs), "resize": "none (native resolution)"}
    elif space == INCEPTION_EXTRACTOR:
        weights = inception_weights_path()
        if not weights.is_file():
            download_weights(
                weights,
                "InceptionV3 weights for FID",
                lambda: FeatureExtractorInceptionV3(INCEPTION_EXTRACTOR, ["2048"]),
            )
        card = {
            "feature_extractor": "InceptionV3 (torch-fidelity inception-v3-compat, 2048-d pool3)",
            "feature_weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "feature_dim": 2048,
            "resize": "torch-fidelity bilinear (TF1.x-compatible) to 299x299; grey-scale repeated to 3 channels",
        }
    else:
        raise ValueError(f"unknown feature space '{space}' (valid: domain, {INCEPTION_EXTRACTOR})")
    samples = inputs.features.extract("samples", space, weights=weights)["features"]
    reference = inputs.features.extract("reference", space, weights=weights)["features"]
    scores = fid_statistics_to_metric(
        fid_features_to_statistics(samples), fid_features_to_statistics(reference), verbose=False
    )
    scores.update(
        kid_features_to_metric(
            samples,
            reference,
            kid_subsets=KID_SUBSETS,
            kid_subset_size=subset,
            kid_degree=3,
            kid_gamma=None,
            kid_coef0=1,
            rng_seed=inputs.seed % (2**31),
            verbose=False,
        )
    )
    # k-NN radii need more than k images in each set; without them precision/recall are not computed.
    if min(n_samples, n_reference) > PRC_NEIGHBOURHOOD:
        scores.update(
            prc_features_to_metric(
                samples,
                reference,
                prc_neighborhood=PRC_NEIGHBOURHOOD,
                prc_batch_size=PRC_BATCH_SIZE,
                save_cpu_ram=True,
                verbose=False,
            )
        )
    card.update(
        {
            "implementation": f"torch-fidelity {torch_fidelity.__version__}",
            "kid_subsets": KID_SUBSETS,
            "kid_subset_size": subset,
            "kid_subset_rule": f"min({KID_MAX_SUBSET}, min(n_samples, n_reference) // 2), sampled without replacement",
            "prc_neighbourhood": PRC_NEIGHBOURHOOD,
            "input": "uint8 (samples rounded to 0..255)",
        }
    )
    return scores, card


def precision_recall_score(inputs: EvalInputs, name: str) -> tuple[float, dict]:
    """`precision` or `recall` from the shared pass; an error naming the minimum when the sets are too small."""
    scores, card = inputs.shared(fidelity_scores)
    if name not in scores:
        raise ValueError(
            f"{name} needs more than k={PRC_NEIGHBOURHOOD} images in both sets "
            f"(got {len(inputs.samples)} samples, {len(inputs.reference)} reference images)"
        )
    return float(scores[name]), card
