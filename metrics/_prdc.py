"""One prdc computation shared by `density` and `coverage` (Naeem et al., ICML 2020).

The authors' package (`prdc`, clovaai) on the domain evaluator's features, k = 5 as the paper
recommends. With R the reference features, S the sample features and B(r, k) the ball around r
whose radius is the distance to r's k-th nearest neighbour in R:

    density  = 1/(k |S|) * sum_{s in S} sum_{r in R} 1[s in B(r, k)]
    coverage = 1/|R| * sum_{r in R} 1[exists s in S: s in B(r, k)]

Density rewards samples where real images are dense (it can exceed 1; real images score about 1)
and, unlike k-NN precision, is not inflated by outliers of the reference set; coverage is the
fraction of real images that have a sample nearby, which copies of a few images cannot raise.

`compute_prdc` also computes k-NN precision and recall, for which it holds the samples' full
pairwise distance matrix: 10 GB at 50,000 samples. Density and coverage need only the reference
radii and the reference-to-sample distances, so this module calls prdc's own functions for those and
streams the samples in blocks: memory is |R| x block whatever the number of samples, and the result
equals `compute_prdc`'s (tests/test_metrics.py checks it against the package).
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

from metrics import EvalInputs
from metrics._features import domain_features, feature_card

PRDC_NEIGHBOURHOOD = 5
SAMPLE_BLOCK = 4096  # samples per block of reference-to-sample distances


def prdc_scores(inputs: EvalInputs) -> tuple[dict, dict]:
    """Density and coverage of the samples against the reference (share it: `inputs.shared(prdc_scores)`)."""
    samples, _ = domain_features(inputs, "samples")
    reference, _ = domain_features(inputs, "reference")
    # A reference image's radius is its (k+1)-th smallest distance within the set (the first is itself).
    if len(reference) < PRDC_NEIGHBOURHOOD + 2:
        raise ValueError(
            f"density and coverage need at least k+2={PRDC_NEIGHBOURHOOD + 2} reference images, got {len(reference)}"
        )
    scores = density_coverage(
        reference.numpy().astype(np.float32), samples.numpy().astype(np.float32), PRDC_NEIGHBOURHOOD
    )
    card = {
        **feature_card(inputs),
        # The block size changes memory, not the values (equal to prdc's own computation, tested), so it is not on
        # the card: a card that differs marks values as measured otherwise.
        "implementation": f"prdc {importlib.metadata.version('prdc')} (Naeem et al.'s reference code)",
        "nearest_k": PRDC_NEIGHBOURHOOD,
        "distance": "euclidean in feature space",
    }
    return scores, card


def density_coverage(
    reference: np.ndarray, samples: np.ndarray, nearest_k: int, block: int = SAMPLE_BLOCK
) -> dict[str, float]:
    """`compute_prdc`'s density and coverage, the samples taken `block` at a time."""
    radii = compute_nearest_neighbour_distances(reference, nearest_k)
    inside = 0  # sum over samples of the number of reference balls holding the sample
    nearest = np.full(len(reference), np.inf, dtype=np.float64)  # each reference image's nearest sample
    for start in range(0, len(samples), block):
        distances = compute_pairwise_distance(reference, samples[start : start + block])
        inside += int((distances < radii[:, None]).sum())
        nearest = np.minimum(nearest, distances.min(axis=1))
    return {
        "density": inside / (nearest_k * len(samples)),
        "coverage": float((nearest < radii).mean()),
    }
