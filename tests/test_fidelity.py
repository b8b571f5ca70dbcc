"""FID, KID, precision/recall and class consistency: against independent computations and by meaning.

These use the Fashion-MNIST domain evaluator, trained on first use (a few minutes on 2 cores)
and cached in BENCH_CACHE_DIR.
"""

import numpy as np
import pytest
import torch
from conftest import requires_data

from bench.data.splits import load_dataset, to_float
from bench.harness.evaluation import evaluate

pytestmark = requires_data("fashion-mnist")
FIDELITY = ["fid", "kid", "precision", "recall", "class_consistency"]


@pytest.fixture(scope="module")
def evaluator():
    from bench.features.evaluator import load_domain_evaluator

    return load_domain_evaluator("fashion-mnist")


@pytest.fixture(scope="module")
def unseen(fashion_split):
    """Real train images of the novel class that are not in the support set (the oracle's images)."""
    _, data = load_dataset("fashion-mnist")
    index = np.setdiff1d(np.flatnonzero(data.train_labels == 9), fashion_split.info.support_indices)
    return to_float(data.train_images[index[:600]])


@pytest.fixture(scope="module")
def sandals():
    _, data = load_dataset("fashion-mnist")
    return to_float(data.train_images[data.train_labels == 5][:600])


def score(samples, split, metrics=FIDELITY, **settings):
    outcomes, _ = evaluate(
        samples,
        reference=split.reference,
        support=split.task.support,
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=metrics,
        seed=0,
        settings=settings,
    )
    for name, outcome in outcomes.items():
        assert outcome["status"] == "ok", (name, outcome)
    return {name: outcome["value"] for name, outcome in outcomes.items()}, outcomes


def _independent_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance with the symmetric form tr sqrt(S_a^1/2 S_b S_a^1/2) (eigh, not torch-fidelity's eigvals).

    Features stay float32 as torch-fidelity holds them: its np.mean of float32 features is a
    float32 mean, which moves FID by about 1e-6 relative against a float64 mean.
    """
    mu_a, mu_b = a.mean(0).astype(np.float64), b.mean(0).astype(np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    half = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(half @ cov_b @ half), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def _float32_features(evaluator, images: torch.Tensor) -> np.ndarray:
    uint8 = (images.clamp(0, 1) * 255).round()
    with torch.no_grad():
        return evaluator.features_and_logits(uint8 / 255)[0].float().numpy()


def test_evaluator_is_accurate_and_its_card_is_complete(evaluator):
    card = evaluator.card
    assert card["test_accuracy"] >= 0.90
    assert len(card["weights_sha256"]) == 64 and card["trained_on"].startswith("all classes of the train split")


def test_fid_matches_an_independent_computation(evaluator, fashion_split, unseen):
    values, outcomes = score(unseen, fashion_split, ["fid"])
    expected = _independent_fid(
        _float32_features(evaluator, unseen), _float32_features(evaluator, fashion_split.reference)
    )
    assert values["fid"] == pytest.approx(expected, rel=1e-6)
    assert outcomes["fid"]["card"]["feature_weights_sha256"] == evaluator.card["weights_sha256"]


def test_fid_of_a_set_with_itself_is_zero(fashion_split):
    values, _ = score(fashion_split.reference, fashion_split, ["fid"])
    assert abs(values["fid"]) < 1e-3


def test_fid_falls_as_samples_are_mixed_towards_the_class(fashion_split, unseen, sandals):
    fids = []
    for real_fraction in (0.0, 0.5, 1.0):
        n_real = int(600 * real_fraction)
        mixed = torch.cat([unseen[:n_real], sandals[: 600 - n_real]])
        fids.append(score(mixed, fashion_split, ["fid"])[0]["fid"])
    assert fids[0] > fids[1] > fids[2]


def test_precision_recall_orientation(fashion_split, unseen):
    collapsed = unseen[:1].repeat(600, 1, 1, 1)
    collapsed_scores = score(collapsed, fashion_split, ["precision", "recall"])[0]
    real_scores = score(unseen, fashion_split, ["precision", "recall"])[0]
    assert collapsed_scores["precision"] > 0.9 and collapsed_scores["recall"] < 0.05
    assert real_scores["precision"] > 0.6 and real_scores["recall"] > 0.6
    assert real_scores["recall"] > collapsed_scores["recall"] + 0.5


def test_kid_subsets_are_smaller_than_the_sample_set(fashion_split, unseen):
    values, outcomes = score(unseen[:50], fashion_split, ["kid"])
    assert outcomes["kid"]["card"]["kid_subset_size"] == 25  # half of 50: subsets of the whole set would all be equal
    assert np.isfinite(values["kid"]) and outcomes["kid"]["std"] > 0


def test_too_few_samples_for_precision_and_recall_leave_fid_standing(fashion_split, unseen):
    outcomes, _ = evaluate(
        unseen[:3],
        reference=fashion_split.reference,
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=["fid", "precision", "recall"],
        seed=0,
    )
    assert outcomes["fid"]["status"] == "ok" and "rank-deficient" in outcomes["fid"]["flag"]
    for name in ("precision", "recall"):
        assert outcomes[name]["status"] == "error" and "more than k=3" in outcomes[name]["error"]


def test_fid_is_flagged_below_the_feature_dimension(fashion_split, unseen):
    _, outcomes = score(unseen[:100], fashion_split, ["fid"])
    assert "rank-deficient" in outcomes["fid"]["flag"]
    _, outcomes = score(unseen[:128], fashion_split, ["fid"])
    assert "rank-deficient" in outcomes["fid"]["flag"]
    _, outcomes = score(unseen[:300], fashion_split, ["fid"])
    assert "flag" not in outcomes["fid"]


def test_real_images_beat_another_class_and_noise(fashion_split, unseen, sandals):
    noise = torch.rand(600, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    real, other, rand = (score(x, fashion_split)[0] for x in (unseen, sandals, noise))
    assert real["class_consistency"] > 0.9 and other["class_consistency"] < 0.1
    assert real["fid"] < other["fid"] and real["fid"] < rand["fid"]
    assert real["kid"] < other["kid"] and real["kid"] < rand["kid"]


def test_copies_of_the_support_set_are_caught(fashion_split, unseen):
    copies = fashion_split.task.support.repeat(150, 1, 1, 1)
    copied, real = (score(x, fashion_split, ["support_nn_mse", "recall"])[0] for x in (copies, unseen))
    assert copied["support_nn_mse"] < 1e-4 < real["support_nn_mse"]
    assert copied["recall"] < 0.1 and real["recall"] > copied["recall"] + 0.5


def test_inception_features_fail_clearly_without_weights(fashion_split, unseen, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    outcomes, _ = evaluate(
        unseen[:20],
        reference=fashion_split.reference,
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=["fid"],
        settings={"feature_extractor": "inception-v3-compat"},
    )
    assert outcomes["fid"]["status"] == "unavailable"
    assert "weights-inception-2015-12-05-6726825d.pth" in outcomes["fid"]["reason"]
    assert str(tmp_path / "torch-home") in outcomes["fid"]["reason"]


def test_a_weak_evaluator_is_refused(monkeypatch):
    import dataclasses

    from bench.data.datasets import DATASETS
    from bench.features import evaluator as module

    strict = dataclasses.replace(DATASETS.get("fashion-mnist"), evaluator_min_accuracy=0.9999)
    monkeypatch.setitem(DATASETS._entries, "fashion-mnist", strict)
    monkeypatch.setattr("bench.data.splits.load_dataset", lambda name: (strict, load_dataset("fashion-mnist")[1]))
    with pytest.raises(module.EvaluatorTooWeak, match="below the required 0.9999"):
        module.load_domain_evaluator("fashion-mnist")
