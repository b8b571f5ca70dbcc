"""One feature pass per image set feeds every feature metric; the reference's features are cached across runs;
the evaluation device reaches the evaluator and the feature pass."""

from __future__ import annotations

import pytest
import torch
import torch_fidelity
from conftest import requires_data

import bench.features.extraction as extraction
import bench.harness.evaluation as evaluation
from bench.data.splits import make_split
from bench.features.evaluator import FIDELITY_EXTRACTOR, load_domain_evaluator
from bench.features.extraction import as_uint8
from bench.harness.evaluation import evaluate

FEATURE_METRICS = ["fid", "kid", "precision", "recall", "density", "coverage", "class_consistency", "support_nn_feat"]


@pytest.fixture(scope="module")
def split():
    return make_split("fashion-mnist", shots=4, seed=0)


def scored(split, samples, names=FEATURE_METRICS, device="cpu"):
    outcomes, _ = evaluate(
        samples,
        reference=split.reference,
        support=split.task.support,
        dataset="fashion-mnist",
        novel_class=split.info.novel_class,
        metric_names=names,
        seed=3,
        device=device,
    )
    return outcomes


@requires_data("fashion-mnist")
def test_each_image_set_is_extracted_once_and_the_reference_once_per_machine(split, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    passes = []
    real = extraction.get_featuresdict_from_dataset

    def counted(dataset, *args, **kwargs):
        passes.append(len(dataset))
        return real(dataset, *args, **kwargs)

    monkeypatch.setattr(extraction, "get_featuresdict_from_dataset", counted)
    samples = split.held_out[:300] if split.held_out is not None else split.reference[:300]
    first = scored(split, samples)
    assert all(first[name]["status"] == "ok" for name in FEATURE_METRICS), first
    # Eight metrics, three sets: the samples, the reference, the shifted support copies (4 images x 25 shifts).
    assert sorted(passes) == sorted([300, len(split.reference), 4 * 25])
    passes.clear()
    second = scored(split, samples)
    assert sorted(passes) == [100, 300]  # the reference's features came from the cache
    assert {n: second[n]["value"] for n in FEATURE_METRICS} == {n: first[n]["value"] for n in FEATURE_METRICS}


@requires_data("fashion-mnist")
def test_fid_kid_precision_recall_equal_torch_fidelitys_own_computation(split, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    samples = (split.reference[:200] + 0.1 * torch.rand(200, *split.reference.shape[1:], generator=generator)).clamp(
        0, 1
    )
    ours = scored(split, samples, ["fid", "kid", "precision", "recall"])
    evaluator = load_domain_evaluator("fashion-mnist")

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = as_uint8(images)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return self.images[index]

    theirs = torch_fidelity.calculate_metrics(
        input1=Images(samples),
        input2=Images(split.reference),
        fid=True,
        kid=True,
        prc=True,
        kid_subsets=100,
        kid_subset_size=100,  # half the smaller set, the metrics' rule
        prc_neighborhood=3,
        feature_extractor=FIDELITY_EXTRACTOR,
        feature_extractor_weights_path=str(evaluator.path),
        rng_seed=3,
        batch_size=500,
        save_cpu_ram=True,
        cuda=False,
        verbose=False,
    )
    assert ours["fid"]["value"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)
    assert ours["kid"]["value"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9)
    assert ours["precision"]["value"] == theirs["precision"]
    assert ours["recall"]["value"] == theirs["recall"]


@requires_data("fashion-mnist")
def test_the_evaluation_device_reaches_the_evaluator_and_the_feature_pass(split, monkeypatch):
    """On this CPU machine: `cpu:0` is a device name no default would produce, so seeing it everywhere shows that the
    setting was handed on rather than a default used."""
    seen = {}
    real_load, real_bank = evaluation.load_domain_evaluator, evaluation.FeatureBank

    def load(*args, **kwargs):
        seen["evaluator"] = kwargs["device"]
        return real_load(*args, **kwargs)

    def bank(*args, **kwargs):
        made = real_bank(*args, **kwargs)
        seen["features"] = made.device
        return made

    monkeypatch.setattr(evaluation, "load_domain_evaluator", load)
    monkeypatch.setattr(evaluation, "FeatureBank", bank)
    outcomes = scored(split, split.reference[:50], ["fid", "class_consistency"], device="cpu:0")
    assert all(outcome["status"] == "ok" for outcome in outcomes.values()), outcomes
    assert seen == {"evaluator": "cpu:0", "features": torch.device("cpu:0")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@requires_data("fashion-mnist")
def test_scoring_on_cuda_agrees_with_the_cpu(split):
    samples = split.reference[:200]
    cpu = scored(split, samples, FEATURE_METRICS)
    cuda = scored(split, samples, FEATURE_METRICS, device="cuda")
    for name in FEATURE_METRICS:
        assert cuda[name]["value"] == pytest.approx(cpu[name]["value"], rel=1e-3, abs=1e-4), name
