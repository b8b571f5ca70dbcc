import numpy as np
import pytest
import torch
from conftest import requires_data
from skimage.metrics import structural_similarity

from bench.harness.evaluation import evaluate
from metrics import METRICS, EvalInputs, Metric, MetricResult
from metrics._nearest import nearest_by_mse


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(37, 1, 12, 12, generator=g)
    reference = torch.rand(23, 1, 12, 12, generator=g)
    return samples, reference


def _brute_force_nearest(samples, reference):
    s = samples.double().numpy().reshape(len(samples), -1)
    r = reference.double().numpy().reshape(len(reference), -1)
    mse = ((s[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    return mse.argmin(1), mse.min(1)


def test_nearest_search_matches_brute_force_across_chunks(images):
    samples, reference = images
    index, mse = nearest_by_mse(samples, reference, chunk=5)
    expected_index, expected_mse = _brute_force_nearest(samples, reference)
    np.testing.assert_array_equal(index.numpy(), expected_index)
    np.testing.assert_allclose(mse.numpy(), expected_mse, rtol=1e-10, atol=1e-12)


def test_mse_and_ssim_match_an_independent_per_pair_computation(images):
    samples, reference = images
    outcomes, _ = evaluate(samples, reference=reference, metric_names=["mse", "ssim"])
    index, mse = _brute_force_nearest(samples, reference)
    assert outcomes["mse"]["value"] == pytest.approx(mse.mean(), rel=1e-9)
    per_pair = [
        structural_similarity(samples[i, 0].double().numpy(), reference[j, 0].double().numpy(), data_range=1.0)
        for i, j in enumerate(index)
    ]
    assert outcomes["ssim"]["value"] == pytest.approx(np.mean(per_pair), rel=1e-9)


def test_ssim_on_colour_images_averages_channels():
    g = torch.Generator().manual_seed(1)
    samples, reference = torch.rand(5, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    outcomes, _ = evaluate(samples, reference=reference, metric_names=["ssim"])
    index, _ = _brute_force_nearest(samples, reference)
    expected = np.mean(
        [
            structural_similarity(
                samples[i].double().numpy(), reference[j].double().numpy(), data_range=1.0, channel_axis=0
            )
            for i, j in enumerate(index)
        ]
    )
    assert outcomes["ssim"]["value"] == pytest.approx(expected, rel=1e-9)


def test_copies_of_the_support_set_score_zero_memorisation_distance(images):
    samples, _ = images
    support = samples[:4]
    copies = support.repeat(10, 1, 1, 1)
    outcomes, _ = evaluate(copies, reference=None, support=support, metric_names=["support_nn_mse"])
    # Zero up to rounding: the distance is ||a||^2 + ||b||^2 - 2ab, exact on some CPUs and 1e-15 on others.
    assert outcomes["support_nn_mse"]["value"] == pytest.approx(0.0, abs=1e-9)
    fresh, _ = evaluate(samples[4:], reference=None, support=support, metric_names=["support_nn_mse"])
    assert fresh["support_nn_mse"]["value"] > 0.05


def test_unmet_needs_are_not_applicable_and_errors_are_recorded(images, monkeypatch):
    samples, reference = images
    outcomes, _ = evaluate(samples, reference=reference, support=None)
    assert outcomes["support_nn_mse"]["status"] == "not_applicable"
    assert "support" in outcomes["support_nn_mse"]["reason"] and "value" not in outcomes["support_nn_mse"]

    def broken(inputs: EvalInputs) -> MetricResult:
        raise RuntimeError("boom")

    original = METRICS.get("mse")
    monkeypatch.setitem(METRICS._entries, "mse", Metric(**{**original.__dict__, "compute": broken}))
    outcomes, _ = evaluate(samples, reference=reference, metric_names=["mse", "ssim"])
    assert outcomes["mse"] == {**outcomes["mse"], "status": "error", "error": "RuntimeError: boom"}
    assert outcomes["ssim"]["status"] == "ok"


def test_capability_needs_are_checked_against_the_model():
    metric = Metric(
        compute=lambda i: MetricResult(1.0),
        higher_is_better=False,
        needs=frozenset({"capability:log_likelihood"}),
        version="1",
        reference="-",
        definition="-",
    )
    inputs = EvalInputs(samples=torch.zeros(2, 1, 4, 4), model=object(), capabilities=frozenset({"latent"}))
    assert metric.missing_needs(inputs) == ["the method has no 'log_likelihood' capability"]
    inputs.capabilities = frozenset({"log_likelihood"})
    assert metric.missing_needs(inputs) == []


@requires_data("fashion-mnist")
def test_real_unseen_images_score_better_than_noise(fashion_split):
    from bench.data.splits import load_dataset, to_float

    _, data = load_dataset("fashion-mnist")
    unseen = data.train_images[data.train_labels == 9]
    unseen = np.delete(unseen, [0], axis=0)[:500]
    real = to_float(unseen)
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    score = lambda x: evaluate(x, reference=fashion_split.reference, support=fashion_split.task.support)[0]
    real_scores, noise_scores = score(real), score(noise)
    assert real_scores["mse"]["value"] < noise_scores["mse"]["value"]
    assert real_scores["ssim"]["value"] > noise_scores["ssim"]["value"]
