"""One prdc computation shared by `density` and `coverage` (Naeem et al., ICML 2020).

The authors' package (`prdc`, clovaai) on the domain evaluator's features, k = 5 as the paper
recommends. With R the reference features, S the sample features and B(r, k) the ball around r
whose radius is the distance to r's k-th nearest neighbour in R:

    density  = 1/(k |S|) * sum_{s in S} sum_{r in R} 1[s in B(r, k)]
    coverage = 1/|R| * sum_{r in R} 1[exists s in S: s in B(r, k)]

Density rewards samples where real images are dense (it can exceed 1; real images score about 1)
and, unlike k-NN precision, is not inflated by outliers of the reference set; coverage is the
fraction of real images that have a sample nearby, which copies of a few images cannot raise.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io

import numpy as np
from prdc import compute_prdc

from metrics import EvalInputs
from metrics._features import domain_features, feature_card

PRDC_NEIGHBOURHOOD = 5


def prdc_scores(inputs: EvalInputs) -> tuple[dict, dict]:
    """Density and coverage of the samples against the reference (share it: `inputs.shared(prdc_scores)`)."""
    samples, _ = domain_features(inputs, "samples")
    reference, _ = domain_features(inputs, "reference")
    # prdc takes each set's (k+1)-th smallest distance to itself (the first is the point itself).
    if min(len(samples), len(reference)) < PRDC_NEIGHBOURHOOD + 2:
        raise ValueError(
            f"density and coverage need at least k+2={PRDC_NEIGHBOURHOOD + 2} images in both sets "
            f"(got {len(samples)} samples, {len(reference)} reference images)"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        scores = compute_prdc(
            reference.numpy().astype(np.float32), samples.numpy().astype(np.float32), PRDC_NEIGHBOURHOOD
        )
    card = {
        **feature_card(inputs),
        "implementation": f"prdc {importlib.metadata.version('prdc')} (Naeem et al.'s reference code)",
        "nearest_k": PRDC_NEIGHBOURHOOD,
        "distance": "euclidean in feature space",
    }
    return {name: float(value) for name, value in scores.items()}, card
