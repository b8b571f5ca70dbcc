"""Speed of the kernels a run spends its time in (pytest-benchmark).

Disabled in the default suite (`--benchmark-disable` runs each once, as a test); timed with
`tox -e benchmarks`, which compares against the baseline saved in `benchmarks/` and fails on a
slowdown beyond its threshold. The baseline was measured on an idle 2-core machine at 1 thread
(the runs' default); re-save it with `tox -e benchmarks -- --benchmark-save=baseline` after a
deliberate change.
"""

import time

import pytest
import torch
from conftest import requires_data
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from bench.features.evaluator import load_domain_evaluator
from bench.features.extraction import FeatureBank
from bench.harness.environment import thread_count
from bench.harness.evaluation import evaluate
from methods import METHODS
from methods._gan import TransferBudget
from methods._imle import IMLE_PROFILES, IMLEBudget
from metrics import EvalInputs, profile_settings
from metrics._backtrack import backtrack_trajectory
from metrics._fidelity import fidelity_scores
from metrics._nearest import nearest_by_mse


@pytest.fixture(autouse=True)
def one_thread():
    with thread_count(1):  # the runs' default (`bench run --threads 1`)
        yield


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


@requires_data("fashion-mnist")
def test_one_feature_pass_of_1000_samples(benchmark, fashion_split):
    evaluator = load_domain_evaluator("fashion-mnist")
    samples = fashion_split.reference[:1000]

    def one_pass():
        return FeatureBank({"samples": samples}, evaluator).extract("samples")["features"]

    assert benchmark(one_pass).shape == (len(samples), evaluator.card["feature_dim"])


@requires_data("fashion-mnist")
def test_fid_kid_precision_recall_on_extracted_features_against_torch_fidelity(benchmark, fashion_split):
    """The scoring overhead: fid+kid+precision+recall from the evaluation's features, against torch-fidelity's own
    functions on the same features. The ratio is in the benchmark's `extra_info`."""
    evaluator = load_domain_evaluator("fashion-mnist")
    samples, reference = _images(1000, 0), fashion_split.reference
    bank = FeatureBank({"samples": samples, "reference": reference}, evaluator, disk_cached=())
    inputs = EvalInputs(samples=samples, reference=reference, evaluator=evaluator, features=bank, seed=0)
    fidelity_scores(inputs)  # extracts both sets: what follows is scoring only
    f1, f2 = bank.extract("samples")["features"], bank.extract("reference")["features"]

    def torch_fidelity_alone():
        fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), verbose=False)
        kid_features_to_metric(f1, f2, kid_subsets=100, kid_subset_size=500, rng_seed=0, verbose=False)
        prc_features_to_metric(f1, f2, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=True, verbose=False)

    start = time.perf_counter()
    for _ in range(3):
        torch_fidelity_alone()
    theirs = (time.perf_counter() - start) / 3
    scores, _ = benchmark(fidelity_scores, inputs)
    assert {"frechet_inception_distance", "kernel_inception_distance_mean", "recall"} <= set(scores)
    if benchmark.stats is not None:  # timed (not --benchmark-disable)
        benchmark.extra_info["torch_fidelity_seconds"] = theirs
        benchmark.extra_info["ratio_to_torch_fidelity"] = benchmark.stats.stats.mean / theirs


@requires_data("fashion-mnist")
def test_five_backtracking_steps_100_targets_3_restarts(benchmark, fashion_split):
    method = METHODS.get("imle")()
    method.fit(fashion_split.task, IMLE_PROFILES["smoke"], seed=0)  # the quick network; its weights do not matter
    inputs = EvalInputs(
        samples=fashion_split.reference[:1],
        reference=fashion_split.reference,
        evaluator=load_domain_evaluator("fashion-mnist"),
        model=method,
        seed=0,
        settings={**profile_settings("quick"), "perceptual_distance": "domain"},
    )
    recorded, _ = benchmark(backtrack_trajectory, inputs, fashion_split.reference[:100], 5, 3)
    assert recorded[5].shape == (3, 100)


@requires_data("fashion-mnist")
def test_one_imle_round_at_the_quick_pool(benchmark, fashion_split):
    budget = IMLEBudget(rounds=1, steps_per_round=20, pool_size=2000)  # quick: 150 such rounds

    def one_round():
        METHODS.get("imle")().fit(fashion_split.task, budget, seed=0)

    benchmark(one_round)


@requires_data("fashion-mnist")
def test_ten_gan_rounds_at_batch_64(benchmark, fashion_split):
    budget = TransferBudget(pretrain_steps=10, finetune_steps=0, pool_size=300)

    def ten_rounds():
        METHODS.get("dcgan")().fit(fashion_split.task, budget, seed=0)

    benchmark(ten_rounds)
