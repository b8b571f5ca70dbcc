"""Speed of the shared evaluation kernels (pytest-benchmark; timed with `pytest --benchmark-enable`)."""

import torch

from bench.harness.evaluation import evaluate
from metrics._nearest import nearest_by_mse


def _images(n, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_nearest_search_1000_by_1000(benchmark):
    samples, reference = _images(1000, 0), _images(1000, 1)
    index, _ = benchmark(nearest_by_mse, samples, reference)
    assert index.shape == (1000,)


def test_pixel_metrics_1000_samples(benchmark):
    samples, reference, support = _images(1000, 0), _images(1000, 1), _images(4, 2)
    outcomes, _ = benchmark(
        evaluate, samples, reference=reference, support=support, metric_names=["mse", "ssim", "support_nn_mse"]
    )
    assert all(o["status"] == "ok" for o in outcomes.values())
